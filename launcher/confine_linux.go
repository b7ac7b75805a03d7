//go:build linux

package launcher

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The confinement is applied by a stage: this binary re-executed
// (/proc/self/exe) in new user, mount and network namespaces, holding
// in those namespaces only the capabilities it needs for the setup. The
// launcher and the stage talk over a socket pair (the stage's fd 3):
//
//	stage -> launcher  hello: the namespaces are usable (lo is up)
//	launcher -> stage  plan: what to hide, which port to listen on, the command
//	stage -> launcher  ready (+ the listening socket, SCM_RIGHTS), or an error
//
// then the stage executes the command in place: the command is the
// process the launcher started, waits for and signals. The stage starts
// before the session is created, so a kernel that cannot confine costs
// no session.

const (
	// confineStageArg0 marks the stage's argv[0].
	confineStageArg0 = "agent-vault-confine-stage"
	// stageFD is the stage's end of the socket pair.
	stageFD = 3
	// stageTimeout bounds each step of the conversation with the stage.
	stageTimeout = 15 * time.Second
	// maxFrame caps one message (the plan carries the environment).
	maxFrame = 16 << 20
	// minLandlockABI is the oldest Landlock the strict mode accepts: ABI
	// 1 denies every rename or link across directories.
	minLandlockABI = 2
)

// stageError is a failure the stage reported (as opposed to one
// starting it, which says the kernel has no user namespaces for us).
type stageError string

func (e stageError) Error() string { return string(e) }

// stageHello is the stage's first message.
type stageHello struct {
	Error string `json:"error,omitempty"`
}

// stageReply answers the plan: empty Error means the confinement is in
// place and the command is being executed.
type stageReply struct {
	Error string `json:"error,omitempty"`
	// Applied lists what the stage put in place, for the summary.
	Applied []string `json:"applied,omitempty"`
}

// confineStage is the launcher's handle on a started stage.
type confineStage struct {
	cmd        *exec.Cmd
	conn       *net.UnixConn
	namespaces bool
	abi        int
	missing    []string
	launched   bool
	hideDirs   []string
	hideFiles  []string

	ln      net.Listener
	relayWG sync.WaitGroup
	mu      sync.Mutex
	open    map[net.Conn]struct{} // relayed connections, both ends
	stopped bool
}

// maxRelays caps the connections forwarded at once: past it a new one is
// closed at once (the command sees its proxy refuse), and the launcher
// keeps descriptors for its own calls (lease renewal, revocation).
const maxRelays = 512

// startConfineStage starts the stage for cfg.Confine. In strict mode it
// refuses, before anything is started, a kernel that cannot confine; in
// best-effort mode it starts what the kernel allows and reports the rest
// in missing.
func startConfineStage(cfg *Config) (*confineStage, error) {
	abi := landlockABI()
	var missing []string
	if abi < minLandlockABI {
		if abi <= 0 {
			missing = append(missing, "Landlock (not in this kernel, or not enabled: lsm=landlock)")
		} else {
			missing = append(missing, fmt.Sprintf("Landlock ABI %d (at least %d is needed, Linux 5.19)", abi, minLandlockABI))
		}
		abi = 0
	}
	if !seccompSupported {
		missing = append(missing, "a seccomp filter for this architecture (amd64 and arm64 have one): terminal input injection (TIOCSTI) and vsock stay open")
	}
	if cfg.Confine == ConfineStrict && len(missing) > 0 {
		return nil, fmt.Errorf("--confine: this kernel cannot confine the command: no %s; use --confine=best-effort to run with what it offers", missing[0])
	}
	dirs, files, err := hiddenPaths(cfg)
	if err != nil {
		return nil, err
	}
	// A directory on a standard stream (av-launch ... < dir) would be a
	// way into whatever gets hidden below it.
	for i, stream := range []any{cfg.Stdin, cfg.Stdout, cfg.Stderr} {
		if f, ok := stream.(*os.File); ok && f != nil {
			if fi, err := f.Stat(); err == nil && fi.IsDir() {
				return nil, fmt.Errorf("--confine: descriptor %d is a directory; it would reach what --confine hides", i)
			}
		}
	}
	if cwd, err := os.Getwd(); err == nil {
		if real, err := filepath.EvalSymlinks(cwd); err == nil {
			for _, d := range dirs {
				if within(real, d) {
					return nil, fmt.Errorf("--confine: the working directory is inside %s, which --confine hides: start from another directory", d)
				}
			}
		}
	}
	st, err := spawnStage(cfg, true)
	if err != nil {
		why := fmt.Sprintf("user namespaces (%v; see /proc/sys/user/max_user_namespaces, kernel.unprivileged_userns_clone or AppArmor's restrict_unprivileged_userns)", unwrapSyscall(err))
		var stageErr stageError
		if errors.As(err, &stageErr) {
			// They exist, but setting them up failed (a container that
			// forbids mounts, say).
			why = "usable namespaces (" + err.Error() + ")"
		}
		if cfg.Confine == ConfineStrict {
			return nil, fmt.Errorf("--confine: this kernel cannot confine the command: no %s; use --confine=best-effort to run with what it offers", why)
		}
		missing = append(missing, why+": without them the broker's files stay readable, and UDP, DNS and TCP to the proxy's port on any address stay open")
		if st, err = spawnStage(cfg, false); err != nil {
			return nil, fmt.Errorf("--confine: starting the confinement stage: %w", err)
		}
	}
	st.abi, st.missing = abi, missing
	st.hideDirs, st.hideFiles = dirs, files
	return st, nil
}

// plan is what the stage is to apply for the command at path.
func (st *confineStage) plan(cfg *Config, path string, env []string, proxyPort int) (confinePlan, error) {
	strict := cfg.Confine == ConfineStrict
	p := confinePlan{Namespaces: st.namespaces, ProgName: cfg.ProgName, Path: path, Args: cfg.Command, Env: env,
		Landlock: strict, Seccomp: strict}
	if st.namespaces {
		p.ListenPort = proxyPort
		for _, list := range [][]string{st.hideDirs, st.hideFiles} {
			for _, path := range list {
				var fi unix.Stat_t
				if err := unix.Stat(path, &fi); err != nil {
					return p, fmt.Errorf("--confine: %s: %v", path, err)
				}
				p.Hide = append(p.Hide, hiddenPath{Path: path, Dir: fi.Mode&unix.S_IFMT == unix.S_IFDIR, Dev: fi.Dev, Ino: fi.Ino})
			}
		}
	} else if st.abi >= 4 {
		p.ConnectPort = proxyPort
	} else if st.abi > 0 {
		st.missing = append(st.missing, fmt.Sprintf("Landlock network rules (ABI %d, 4 is needed): TCP connects go anywhere", st.abi))
	}
	return p, nil
}

// report says, in best-effort mode, what is in place and what is not.
func (st *confineStage) report(cfg *Config, applied []string) {
	if cfg.Confine != ConfineBestEffort {
		return
	}
	if len(st.missing) == 0 {
		fmt.Fprintf(cfg.Stderr, "%s: --confine=best-effort: fully confined (%s)\n", cfg.ProgName, strings.Join(applied, "; "))
		return
	}
	fmt.Fprintf(cfg.Stderr, "%s: WARNING: --confine=best-effort: the command is only partly confined.\n", cfg.ProgName)
	for _, m := range st.missing {
		fmt.Fprintf(cfg.Stderr, "%s:   missing: %s\n", cfg.ProgName, m)
	}
	if len(applied) > 0 {
		fmt.Fprintf(cfg.Stderr, "%s:   in place: %s\n", cfg.ProgName, strings.Join(applied, "; "))
	}
}

// spawnStage starts the stage, in new namespaces if namespaces, and
// waits for its hello.
func spawnStage(cfg *Config, namespaces bool) (*confineStage, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "confine-launcher"), os.NewFile(uintptr(fds[1]), "confine-stage")
	defer theirs.Close()
	attr := childSysProcAttr()
	if namespaces {
		uid, gid := os.Getuid(), os.Getgid()
		attr.Cloneflags = syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS | syscall.CLONE_NEWNET
		// The same ids inside as outside: the command's files stay its own.
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: uid, HostID: uid, Size: 1}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: gid, HostID: gid, Size: 1}}
		attr.GidMappingsEnableSetgroups = false
		// Only for the setup; the stage drops every capability before
		// it executes the command.
		attr.AmbientCaps = []uintptr{unix.CAP_SYS_ADMIN, unix.CAP_NET_ADMIN, unix.CAP_SETPCAP}
	}
	if namespaces {
		// The launcher is non-dumpable (procguard), which makes the
		// /proc files of its children root's: a launcher that is not
		// root could not write the stage's uid_map. Dumpable just while
		// the stage is forked and mapped (within Start), before any
		// agent code runs. What could trace the launcher in that window
		// is an unconfined process of the same user, which could read
		// the token file itself anyway; a confined one cannot (Landlock).
	}
	restoreDumpable := func() {}
	if d, _ := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0); namespaces && d == 0 {
		unix.Prctl(unix.PR_SET_DUMPABLE, 1, 0, 0, 0)
		restoreDumpable = func() { unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0) }
	}
	cmd := &exec.Cmd{
		Path:        "/proc/self/exe",
		Args:        stageArgs(namespaces),
		Env:         []string{}, // the command's environment comes with the plan
		Stdin:       cfg.Stdin,
		Stdout:      cfg.Stdout,
		Stderr:      cfg.Stderr,
		ExtraFiles:  []*os.File{theirs},
		SysProcAttr: attr,
	}
	err = cmd.Start() // the id maps are written by the time it returns
	restoreDumpable()
	if err != nil {
		ours.Close()
		return nil, err
	}
	fc, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		killStage(cmd)
		return nil, err
	}
	st := &confineStage{cmd: cmd, conn: fc.(*net.UnixConn), namespaces: namespaces}
	var hello stageHello
	if _, err := st.read(&hello); err != nil {
		st.abort()
		return nil, fmt.Errorf("the confinement stage did not start: %w", err)
	}
	if hello.Error != "" {
		st.abort()
		return nil, stageError(hello.Error)
	}
	return st, nil
}

// launch sends the plan and waits until the stage has applied it; the
// stage then executes the command. On success the stage's listener (if
// any) is forwarded to proxyTarget until stop.
func (st *confineStage) launch(plan confinePlan, proxyTarget string) (*os.Process, []string, error) {
	if err := st.write(plan); err != nil {
		return nil, nil, fmt.Errorf("confinement stage: %w", err)
	}
	var reply stageReply
	fds, err := st.read(&reply)
	if err == nil && reply.Error != "" {
		err = errors.New(reply.Error)
	}
	if err == nil && st.namespaces && len(fds) != 1 {
		err = errors.New("confinement stage sent no listening socket")
	}
	if err != nil {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, nil, fmt.Errorf("--confine: %w", err)
	}
	if st.namespaces {
		f := os.NewFile(uintptr(fds[0]), "confine-listener")
		st.ln, err = net.FileListener(f)
		f.Close()
		if err != nil {
			return nil, nil, fmt.Errorf("--confine: the forwarded socket: %w", err)
		}
		st.relayWG.Add(1)
		go st.forward(proxyTarget)
	}
	st.launched = true
	return st.cmd.Process, reply.Applied, nil
}

// forward relays every connection the command makes to its loopback
// proxy port to the session proxy, until stop.
func (st *confineStage) forward(target string) {
	defer st.relayWG.Done()
	backoff := 5 * time.Millisecond
	for {
		c, err := st.ln.Accept()
		if err != nil {
			if st.isStopped() {
				return
			}
			// Out of descriptors, say: wait and go on, as net/http does;
			// the relay must not die while the command runs.
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		if !st.track(c) {
			c.Close()
			continue
		}
		st.relayWG.Add(1)
		go func() {
			defer st.relayWG.Done()
			defer st.untrack(c)
			st.relayConn(c, target)
		}()
	}
}

func (st *confineStage) isStopped() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.stopped
}

// track registers a relayed connection; false past maxRelays or after
// stop.
func (st *confineStage) track(c net.Conn) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.stopped || len(st.open) >= 2*maxRelays {
		return false
	}
	if st.open == nil {
		st.open = make(map[net.Conn]struct{})
	}
	st.open[c] = struct{}{}
	return true
}

func (st *confineStage) untrack(c net.Conn) {
	st.mu.Lock()
	defer st.mu.Unlock()
	delete(st.open, c)
	c.Close()
}

// relayConn copies between the command's connection and one to target,
// passing on each side's end of stream.
func (st *confineStage) relayConn(c net.Conn, target string) {
	up, err := net.DialTimeout("tcp", target, 10*time.Second)
	if err != nil {
		return // the command sees the connection close, as a refused proxy
	}
	if !st.track(up) {
		up.Close()
		return
	}
	defer st.untrack(up)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	<-done
}

// stop closes the forwarded listener and every relayed connection once
// the command is gone: what it left running has no way out after that.
func (st *confineStage) stop() {
	st.mu.Lock()
	st.stopped = true
	for c := range st.open {
		c.Close()
	}
	st.mu.Unlock()
	if st.ln != nil {
		st.ln.Close()
		st.relayWG.Wait()
	}
	st.conn.Close()
}

// abort kills a stage that never executed the command.
func (st *confineStage) abort() {
	if st.launched {
		return
	}
	st.conn.Close()
	killStage(st.cmd)
}

func killStage(cmd *exec.Cmd) {
	cmd.Process.Kill()
	cmd.Wait()
}

// write sends one length-prefixed JSON message.
func (st *confineStage) write(v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	frame, err := encodeFrame(data)
	if err != nil {
		return err
	}
	st.conn.SetWriteDeadline(time.Now().Add(stageTimeout))
	_, err = st.conn.Write(frame)
	return err
}

// read receives one length-prefixed JSON message and the descriptors
// sent with it.
func (st *confineStage) read(v any) ([]int, error) {
	st.conn.SetReadDeadline(time.Now().Add(stageTimeout))
	var (
		buf  []byte
		fds  []int
		want = -1
		tmp  = make([]byte, 64<<10)
		oob  = make([]byte, unix.CmsgSpace(4*4))
	)
	for want < 0 || len(buf) < want {
		n, oobn, _, _, err := st.conn.ReadMsgUnix(tmp, oob)
		if oobn > 0 {
			if msgs, perr := unix.ParseSocketControlMessage(oob[:oobn]); perr == nil {
				for _, m := range msgs {
					if got, err := unix.ParseUnixRights(&m); err == nil {
						fds = append(fds, got...)
					}
				}
			}
		}
		buf = append(buf, tmp[:n]...)
		if want < 0 && len(buf) >= 4 {
			size, err := frameSize(buf[:4])
			if err != nil {
				return fds, err
			}
			want = 4 + size
		}
		if err != nil {
			if want < 0 || len(buf) < want {
				if errors.Is(err, io.EOF) {
					return fds, errors.New("the stage exited")
				}
				return fds, err
			}
		}
	}
	if len(buf) != want {
		return fds, errors.New("unexpected data")
	}
	return fds, json.Unmarshal(buf[4:], v)
}

// encodeFrame prefixes data with its length, the one framing of the
// launcher-stage conversation (both ways).
func encodeFrame(data []byte) ([]byte, error) {
	if len(data) > maxFrame {
		return nil, errors.New("message too large")
	}
	frame := make([]byte, 4+len(data))
	binary.BigEndian.PutUint32(frame, uint32(len(data)))
	copy(frame[4:], data)
	return frame, nil
}

// frameSize reads a frame's length prefix.
func frameSize(prefix []byte) (int, error) {
	size := binary.BigEndian.Uint32(prefix)
	if size > maxFrame {
		return 0, errors.New("message too large")
	}
	return int(size), nil
}

func stageArgs(namespaces bool) []string {
	if namespaces {
		return []string{confineStageArg0, stageNamespacesArg}
	}
	return []string{confineStageArg0}
}

// unwrapSyscall names the errno under an exec error ("operation not
// permitted") rather than the whole fork/exec chain.
func unwrapSyscall(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	return strings.TrimPrefix(err.Error(), "fork/exec /proc/self/exe: ")
}
