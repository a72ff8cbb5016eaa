package bpf

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// nonRootHint points at the setup a daemon user needs.
const nonRootHint = `see README, "Running as a non-root user"`

// pinDirMode is the mode of a pin directory Open creates: the daemon's
// user owns it, its group may list it. The pins inside are 0600 (the
// kernel's default, less the umask), so opening one takes the daemon's
// own user, as relayctl's pinned-map fallback does.
const pinDirMode = 0o750

// ensurePinDir makes pinPath a directory on bpffs that this process can
// pin into. /sys/fs/bpf is the conventional mount point, so a pin path
// below it gets bpffs mounted there; any other path gets its own mount.
// Each way it can fail for a daemon user says what to set up.
func ensurePinDir(pinPath string) error {
	var st unix.Statfs_t
	err := unix.Statfs(pinPath, &st)
	switch {
	case err == nil && st.Type == unix.BPF_FS_MAGIC:
		return writableDir(pinPath)
	case errors.Is(err, unix.EACCES):
		// systemd mounts /sys/fs/bpf with mode 0700, so nothing below it
		// is reachable for any user but root.
		return fmt.Errorf("pin path %s: %w: a directory above it is not searchable by uid %d gid %d (systemd mounts /sys/fs/bpf with mode 0700); %s",
			pinPath, err, os.Geteuid(), os.Getegid(), nonRootHint)
	case err != nil && !errors.Is(err, unix.ENOENT):
		return fmt.Errorf("pin path %s: %w", pinPath, err)
	}
	parent := filepath.Dir(pinPath)
	if isBPFFS(parent) {
		return makePinDir(pinPath)
	}
	target := pinPath
	if parent == "/sys/fs/bpf" {
		target = parent
	}
	set, err := effectiveCaps()
	if err != nil {
		return err
	}
	if !hasCap(set, unix.CAP_SYS_ADMIN) {
		return fmt.Errorf("pin path %s is on no bpffs, and mounting one at %s needs CAP_SYS_ADMIN: mount it before sipd starts "+
			"(mount -t bpf bpffs %s) or set media.pin_path to a directory on a mounted bpffs: %w", pinPath, target, target, unix.EPERM)
	}
	if err := os.MkdirAll(target, 0o700); err != nil {
		return fmt.Errorf("create bpffs mount point %s: %w", target, err)
	}
	if err := unix.Mount("bpffs", target, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs at %s: %w", target, err)
	}
	if target == pinPath {
		return nil
	}
	return makePinDir(pinPath)
}

// makePinDir creates pinPath in a bpffs directory, or accepts the one
// that is there.
func makePinDir(pinPath string) error {
	err := os.Mkdir(pinPath, pinDirMode)
	switch {
	case errors.Is(err, fs.ErrExist):
		return writableDir(pinPath)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("create pin directory %s: %w: %s; as root, create it for uid %d gid %d: install -d -o %d -g %d -m 0750 %s; %s",
			pinPath, err, describe(filepath.Dir(pinPath)), os.Geteuid(), os.Getegid(), os.Geteuid(), os.Getegid(), pinPath, nonRootHint)
	case err != nil:
		return fmt.Errorf("create pin directory %s: %w", pinPath, err)
	}
	// The mode is the daemon's contract with relayctl, not the umask's.
	if err := os.Chmod(pinPath, pinDirMode); err != nil {
		return fmt.Errorf("set mode of pin directory %s: %w", pinPath, err)
	}
	return nil
}

// writableDir checks that this process may pin into dir, so a directory
// prepared for another user fails here, naming the owner, rather than at
// the first pin.
func writableDir(dir string) error {
	err := unix.Faccessat(unix.AT_FDCWD, dir, unix.W_OK|unix.X_OK, unix.AT_EACCESS)
	if err == nil {
		return nil
	}
	return fmt.Errorf("pin directory %s: %w: %s, and sipd runs as uid %d gid %d; as root: chown %d:%d %s; %s",
		dir, err, describe(dir), os.Geteuid(), os.Getegid(), os.Geteuid(), os.Getegid(), dir, nonRootHint)
}

// describe says who owns path and its mode, for error messages.
func describe(path string) string {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fmt.Sprintf("%s: %v", path, err)
	}
	return fmt.Sprintf("%s is owned by uid %d gid %d with mode %04o", path, st.Uid, st.Gid, st.Mode&0o7777)
}

// liftMemlock lets map memory be charged as the kernel needs. From Linux
// 5.11 maps count against the memory cgroup and this does nothing; before,
// they count against RLIMIT_MEMLOCK, and lifting it needs
// CAP_SYS_RESOURCE, which a daemon user should not hold: then the limit
// stays, and the log says where a map creation failure would come from.
func liftMemlock(log *slog.Logger) {
	if err := rlimit.RemoveMemlock(); err != nil {
		log.Warn("cannot lift RLIMIT_MEMLOCK: on this kernel (before 5.11) BPF maps count against it and may not fit; "+
			"raise it for sipd (systemd LimitMEMLOCK=) or grant CAP_SYS_RESOURCE", "err", err)
	}
}
