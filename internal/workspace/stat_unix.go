//go:build linux || darwin

package workspace

import "golang.org/x/sys/unix"

func statKeyOf(st *unix.Stat_t) statKey {
	return statKey{
		size:  st.Size,
		mtime: st.Mtim.Sec*1e9 + st.Mtim.Nsec,
		ctime: st.Ctim.Sec*1e9 + st.Ctim.Nsec,
		ino:   uint64(st.Ino),
		mode:  uint32(st.Mode),
	}
}
