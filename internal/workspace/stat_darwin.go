//go:build darwin

package workspace

import "syscall"

func statKeyOf(st *syscall.Stat_t) statKey {
	return statKey{
		size:  st.Size,
		mtime: st.Mtimespec.Sec*1e9 + st.Mtimespec.Nsec,
		ctime: st.Ctimespec.Sec*1e9 + st.Ctimespec.Nsec,
		ino:   st.Ino,
		mode:  uint32(st.Mode),
	}
}
