// Package scale holds the scale-out tests of Warrant: real `warrant plane
// serve` replicas sharing one PostgreSQL database, with `warrant runner
// start` processes spread across them (scale_test.go), and the benchmark
// table comparing one and three PostgreSQL replicas with one SQLite plane
// (bench_test.go, run with -scale.bench). It has no non-test code.
package scale
