// Package reliability holds Warrant's reliability and security suite: the
// promises a security buyer checks — no run lost, none run twice, no
// secret leaked, no escape — tested under crashes, load and hostile input
// with real `warrant plane serve` and `warrant runner start` processes on
// loopback.
//
// What runs where (docs/reliability.md has the table, the figures and the
// commands):
//
//   - plain `go test ./test/reliability/...` (CI): SIGKILLs of the plane at
//     chosen points of a run's life (claim, upload, complete, anywhere),
//     SIGKILLs of runners mid-session, a cut runner–plane connection, a
//     full data disk (root only; always under CI=true), the forged and
//     replayed objects suite, and after everything a scan of every data
//     directory, blob, log, receipt and bundle for every secret value and
//     token the suite used;
//   - `-reliability.load`: 1,000 runs through one plane and four runners
//     (`warrant bench`), with latency percentiles and peak memory;
//   - `-reliability.soak=30m`: a steady-rate soak printing memory and
//     goroutine counts at intervals, which must stay flat;
//   - `-reliability.cut=30s`: the connection cut at full length.
//
// It has no non-test code.
package reliability
