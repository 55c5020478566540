// Command warrant is the single binary of Warrant: the CLI, the plane
// (`warrant plane serve`), the runner (`warrant runner start`) and the
// one-process development setup (`warrant dev`).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"warrant.dev/warrant/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], cli.Stdio{In: os.Stdin, Out: os.Stdout, Err: os.Stderr})
	stop()
	os.Exit(code)
}
