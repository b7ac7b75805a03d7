//go:build linux

package launcher

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// stageNamespacesArg, as argv[1], tells the stage it runs in new
// namespaces (with the setup capabilities).
const stageNamespacesArg = "namespaces"

// init runs the --confine stage, and never returns, if this process is
// one: the launcher re-executes its own binary (/proc/self/exe) for it,
// whichever binary embeds the launcher (av-launch, agent-vault, a Caddy
// built with xcaddy, a test binary); argv[0] marks it. Anything else
// goes on to main.
func init() {
	if len(os.Args) == 0 || os.Args[0] != confineStageArg0 {
		return
	}
	// Capabilities, no_new_privs and the Landlock domain belong to a
	// thread: everything happens on this one, which then executes the
	// command.
	runtime.LockOSThread()
	os.Exit(runStage(len(os.Args) > 1 && os.Args[1] == stageNamespacesArg))
}

// runStage sets up the confinement and executes the command; it returns
// only on failure, with the exit code.
func runStage(namespaces bool) int {
	if _, err := unix.FcntlInt(stageFD, unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
		fmt.Fprintln(os.Stderr, "confinement stage: no control socket")
		return ExitSetup
	}
	ctl := os.NewFile(stageFD, "confine")
	fail := func(format string, args ...any) int {
		sendFrame(stageReply{Error: fmt.Sprintf(format, args...)}, -1)
		return ExitSetup
	}
	var hello stageHello
	if namespaces {
		if err := stageEnterNamespaces(); err != nil {
			hello.Error = err.Error()
		}
	}
	if err := sendFrame(hello, -1); err != nil || hello.Error != "" {
		return ExitSetup
	}
	var plan confinePlan
	if err := readFrame(ctl, &plan); err != nil {
		return fail("reading the plan: %v", err)
	}
	var applied []string
	listener := -1
	if plan.Namespaces {
		if !namespaces {
			return fail("the plan needs namespaces the stage does not have")
		}
		var err error
		if listener, err = listenLoopback(plan.ListenPort); err != nil {
			return fail("listening on 127.0.0.1:%d in the command's network namespace: %v", plan.ListenPort, err)
		}
		applied = append(applied, "own network namespace: TCP only to the proxy, no UDP/DNS out")
		if err := hideAll(plan.Hide); err != nil {
			return fail("%v", err)
		}
		// A working directory inside a hidden path would still reach
		// what is under the mount: refused, and any other is looked up
		// again, through the mounts.
		cwd, err := os.Getwd()
		if err != nil {
			return fail("the working directory: %v", err)
		}
		for _, h := range plan.Hide {
			if within(cwd, h.Path) {
				return fail("the working directory is inside %s, which --confine hides: start from another directory", h.Path)
			}
		}
		if err := unix.Chdir(cwd); err != nil {
			return fail("the working directory: %v", err)
		}
		if n := len(plan.Hide); n > 0 {
			applied = append(applied, fmt.Sprintf("%d broker paths hidden", n))
		}
		if err := dropCapabilities(); err != nil {
			return fail("dropping capabilities: %v", err)
		}
		applied = append(applied, "no capabilities")
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fail("no_new_privs: %v", err)
	}
	if abi := landlockABI(); abi >= minLandlockABI {
		got, err := landlockRestrict(abi, plan.ConnectPort)
		if err != nil {
			return fail("%v", err)
		}
		applied = append(applied, got...)
	} else if plan.Landlock {
		return fail("Landlock ABI %d here, %d needed", abi, minLandlockABI)
	}
	if seccompSupported {
		if err := seccompRestrict(); err != nil {
			return fail("%v", err)
		}
		applied = append(applied, "seccomp: no terminal input injection (TIOCSTI), no vsock or other socket families, no io_uring")
	} else if plan.Seccomp {
		return fail("no seccomp filter for this architecture")
	}
	// Descriptors the launcher inherited from its own caller (the
	// stage's are close-on-exec already) must not reach the command: a
	// directory or socket opened outside goes around every rule above.
	if err := closeInheritedFDs(); err != nil {
		return fail("closing inherited descriptors: %v", err)
	}
	if plan.Namespaces {
		// The bounding set and securebits are gone; this clears what
		// the setup held.
		if err := clearCapSets(); err != nil {
			return fail("dropping capabilities: %v", err)
		}
	}
	if err := sendFrame(stageReply{Applied: applied}, listener); err != nil {
		return ExitSetup
	}
	if listener >= 0 {
		unix.Close(listener)
	}
	ctl.Close()
	err := syscall.Exec(plan.Path, plan.Args, plan.Env)
	// The launcher resolved the path already: what fails here is
	// mostly a command inside a hidden path.
	name := plan.Path
	if len(plan.Args) > 0 {
		name = plan.Args[0]
	}
	code, err := startFailure(name, err)
	fmt.Fprintf(os.Stderr, "%s: %v\n", plan.ProgName, err)
	return code
}

// stageEnterNamespaces makes the mount namespace private (nothing
// mounted here reaches the host) and brings up loopback, the network
// namespace's only interface.
func stageEnterNamespaces() error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making the mount namespace private: %v", err)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bringing up loopback: %v", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bringing up loopback: %v", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bringing up loopback: %v", err)
	}
	return nil
}

// listenLoopback opens the listening socket the launcher forwards.
func listenLoopback(port int) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := unix.Listen(fd, 512); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// closeInheritedFDs marks every descriptor from 3 up close-on-exec.
func closeInheritedFDs() error {
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err == nil {
		return nil
	}
	// Before Linux 5.11: one by one.
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd >= 3 {
			unix.CloseOnExec(fd)
		}
	}
	return nil
}

// openHidden opens p by a descriptor that still names the file the
// launcher saw, and returns the path that mounts over it.
func openHidden(p hiddenPath) (target string, closeFD func(), err error) {
	fd, err := unix.Open(p.Path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", nil, fmt.Errorf("hiding %s: %v", p.Path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Dev != p.Dev || st.Ino != p.Ino || (st.Mode&unix.S_IFMT == unix.S_IFDIR) != p.Dir {
		unix.Close(fd)
		return "", nil, fmt.Errorf("hiding %s: it changed since the launcher looked at it", p.Path)
	}
	return "/proc/self/fd/" + strconv.Itoa(fd), func() { unix.Close(fd) }, nil
}

// hideAll covers each directory with an empty read-only tmpfs of mode
// 000 and each file with /dev/null on a read-only nodev bind mount
// (opening it fails: a device on a nodev mount). The command cannot
// remove them: it has no capabilities, and Landlock denies unmounting
// to its domain even in a user namespace of its own, where these
// mounts are locked to the ones beneath anyway.
func hideAll(paths []hiddenPath) error {
	const flags = unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	var files []hiddenPath
	for _, p := range paths {
		if !p.Dir {
			files = append(files, p)
			continue
		}
		target, done, err := openHidden(p)
		if err != nil {
			return err
		}
		err = unix.Mount("agent-vault-hidden", target, "tmpfs", flags, "mode=000,size=4k,nr_inodes=2")
		done()
		if err != nil {
			return fmt.Errorf("hiding %s: %v", p.Path, err)
		}
	}
	if len(files) == 0 {
		return nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs("/dev/null", &st); err != nil {
		return fmt.Errorf("hiding files: %v", err)
	}
	// A remount in a user namespace must keep the flags locked on the
	// mount it came from.
	locked := uintptr(0)
	for _, f := range [][2]uintptr{
		{unix.ST_RDONLY, unix.MS_RDONLY}, {unix.ST_NOSUID, unix.MS_NOSUID}, {unix.ST_NODEV, unix.MS_NODEV},
		{unix.ST_NOEXEC, unix.MS_NOEXEC}, {unix.ST_NOATIME, unix.MS_NOATIME}, {unix.ST_NODIRATIME, unix.MS_NODIRATIME},
		{unix.ST_RELATIME, unix.MS_RELATIME},
	} {
		if uintptr(st.Flags)&f[0] != 0 {
			locked |= f[1]
		}
	}
	for _, f := range files {
		target, done, err := openHidden(f)
		if err != nil {
			return err
		}
		err = unix.Mount("/dev/null", target, "", unix.MS_BIND, "")
		done()
		if err != nil {
			return fmt.Errorf("hiding %s: %v", f.Path, err)
		}
		// The new mount is on top at the path now.
		if err := unix.Mount("", f.Path, "", unix.MS_REMOUNT|unix.MS_BIND|flags|locked, ""); err != nil {
			return fmt.Errorf("hiding %s (read-only remount): %v", f.Path, err)
		}
	}
	return nil
}

// dropCapabilities locks the securebits (no capabilities for uid 0 on
// exec, none kept over setuid) and empties the bounding set, while the
// stage still holds CAP_SETPCAP.
func dropCapabilities() error {
	const secbits = 0x01 | 0x02 | 0x04 | 0x08 | 0x20 | 0x40 | 0x80 // NOROOT, NO_SETUID_FIXUP, KEEP_CAPS off, NO_CAP_AMBIENT_RAISE; all locked
	if err := unix.Prctl(unix.PR_SET_SECUREBITS, secbits, 0, 0, 0); err != nil {
		return fmt.Errorf("securebits: %v", err)
	}
	for c := 0; ; c++ {
		err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0)
		if errors.Is(err, unix.EINVAL) {
			break // past the last capability
		}
		if err != nil {
			return fmt.Errorf("bounding set: %v", err)
		}
	}
	return nil
}

// clearCapSets empties the ambient, inheritable, permitted and
// effective sets.
func clearCapSets() error {
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return err
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	return unix.Capset(&hdr, &data[0])
}

// sendFrame writes one message to the launcher, with fd attached if >= 0.
func sendFrame(v any, fd int) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	frame, err := encodeFrame(data)
	if err != nil {
		return err
	}
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	if err := unix.Sendmsg(stageFD, frame, oob, nil, 0); err != nil {
		return err
	}
	return nil
}

// readFrame reads one length-prefixed JSON message.
func readFrame(r io.Reader, v any) error {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return err
	}
	size, err := frameSize(n[:])
	if err != nil {
		return err
	}
	data := make([]byte, size)
	if _, err := io.ReadFull(r, data); err != nil {
		return err
	}
	return json.Unmarshal(data, v)
}
