package procguard

// The syscall package lacks these on 386.
const (
	sysProcessVMReadv  = 347
	sysProcessVMWritev = 348
)
