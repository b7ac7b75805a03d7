package procguard

// The syscall package lacks these on amd64.
const (
	sysProcessVMReadv  = 310
	sysProcessVMWritev = 311
)
