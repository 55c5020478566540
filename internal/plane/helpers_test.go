package plane_test

import (
	"warrant.dev/warrant/internal/plane"
	"warrant.dev/warrant/protocol"
)

func planeDefaultPolicy() protocol.Policy { return plane.DefaultPolicy() }
