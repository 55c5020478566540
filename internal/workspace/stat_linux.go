//go:build linux

package workspace

import "syscall"

func statKeyOf(st *syscall.Stat_t) statKey {
	return statKey{
		size:  st.Size,
		mtime: st.Mtim.Sec*1e9 + st.Mtim.Nsec,
		ctime: st.Ctim.Sec*1e9 + st.Ctim.Nsec,
		ino:   st.Ino,
		mode:  st.Mode,
	}
}
