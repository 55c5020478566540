//go:build linux && !(amd64 || arm64)

package namespace

import "errors"

const seccompSupported = false

func installSeccomp() error {
	return errors.New("no seccomp filter for this architecture")
}
