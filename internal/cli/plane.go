package cli

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/spf13/cobra"

	"warrant.dev/warrant/internal/plane"
)

func init() { register(newPlaneCmd) }

func newPlaneCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "plane",
		Short: "Run the Warrant control plane",
		Args:  noArgs,
	}
	cmd.AddCommand(a.planeServeCmd())
	return cmd
}

type planeServeFlags struct {
	data, listen, storeKind, keyFile, logLevel string
	leaseTTL, heartbeat, contractTTL           time.Duration
	consentTimeout, maxClaimWait, retention    time.Duration
	maxBody, maxBlob                           int64
	rateLimit                                  float64
	rateBurst                                  int
	shutdownGrace                              time.Duration
	tlsCert, tlsKey                            string
	secureCookies                              bool
}

func (a *app) planeServeCmd() *cobra.Command {
	var f planeServeFlags
	cmd := &cobra.Command{
		Use:   "serve --data DIR [--listen ADDR]",
		Short: "Serve the plane's HTTP API (state in DIR; SIGTERM stops it gracefully)",
		Long: `Serve the plane's HTTP API (docs/api.md).

State lives in DIR: plane.db (SQLite, WAL), blobs/, plane.key.pem (the
signing key, created on first start, 0600), master.key (32 random bytes
sealing secrets, 0600; WARRANT_MASTER_KEY=<base64> overrides it) and, on
first start, admin.token (the bootstrap admin token, 0600).

With --store postgres://USER@HOST/DB (or --store postgres and the PG*
environment variables; keep the password in PGPASSWORD or ~/.pgpass, not
on the command line) the state and blobs live in PostgreSQL and several
replicas may serve one database. Each replica then needs the same signing
key (--key FILE) and the same master key (WARRANT_MASTER_KEY); a replica
with other keys refuses to start. DIR keeps only this replica's files.

With --tls-cert and --tls-key the plane serves HTTPS itself (TLS 1.2 or
later; the files are read at start: restart to rotate them). Clients that
must trust a private CA take it from SSL_CERT_FILE. Behind a proxy that
terminates TLS, pass --secure-cookies so the web UI's cookies are marked
Secure.

SIGINT/SIGTERM drain the plane: long polls and event streams end, requests
in flight finish (up to --shutdown-grace), then the process exits.`,
		Example: `  warrant plane serve --data /var/lib/warrant --listen 127.0.0.1:7070
  WARRANT_MASTER_KEY=$(head -c32 /dev/urandom | base64) warrant plane serve --data ./plane
  WARRANT_MASTER_KEY=$(cat master.b64) warrant plane serve --store postgres://warrant@db/warrant \
      --key /etc/warrant/plane.key.pem --data /var/lib/warrant --listen :7070`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return a.planeServe(f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.data, "data", "", "data directory (required)")
	fl.StringVar(&f.listen, "listen", "127.0.0.1:7070", "address to listen on (host:port; port 0 picks a free one)")
	fl.StringVar(&f.storeKind, "store", "sqlite", "state store: sqlite (in DIR), or postgres / postgres://… (shared by replicas)")
	fl.StringVar(&f.keyFile, "key", "", "plane signing key file (default DIR/plane.key.pem)")
	fl.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fl.DurationVar(&f.leaseTTL, "lease-ttl", plane.DefaultLeaseTTL, "claim lease lifetime without a heartbeat")
	fl.DurationVar(&f.heartbeat, "heartbeat", plane.DefaultHeartbeatInterval, "heartbeat interval runners are told to keep")
	fl.DurationVar(&f.contractTTL, "contract-ttl", plane.DefaultContractTTL, "how long an issued contract may wait for a claim")
	fl.DurationVar(&f.consentTimeout, "consent-timeout", plane.DefaultConsentTimeout, "how long a run may await approval")
	fl.DurationVar(&f.maxClaimWait, "max-claim-wait", plane.DefaultMaxClaimWait, "longest claim long poll")
	fl.DurationVar(&f.retention, "retention-interval", plane.DefaultRetentionInterval, "how often the retention policy runs")
	fl.Int64Var(&f.maxBody, "max-body-bytes", plane.DefaultMaxBodyBytes, "largest JSON request body")
	fl.Int64Var(&f.maxBlob, "max-blob-bytes", plane.DefaultMaxBlobBytes, "largest blob")
	fl.Float64Var(&f.rateLimit, "rate-limit", plane.DefaultRateLimit, "requests per second per principal")
	fl.IntVar(&f.rateBurst, "rate-burst", plane.DefaultRateBurst, "request burst per principal")
	fl.DurationVar(&f.shutdownGrace, "shutdown-grace", 30*time.Second, "how long shutdown waits for requests in flight")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "serve HTTPS with this PEM certificate chain (with --tls-key)")
	fl.StringVar(&f.tlsKey, "tls-key", "", "the PEM private key of --tls-cert")
	fl.BoolVar(&f.secureCookies, "secure-cookies", false, "mark the web UI's cookies Secure (set it when a TLS-terminating proxy serves the plane over HTTPS; automatic with --tls-cert)")
	return cmd
}

func (a *app) planeServe(f planeServeFlags) error {
	if f.data == "" {
		return usageError("--data DIR is required: the directory that holds the plane's database, blobs and keys")
	}
	if f.storeKind != "sqlite" && !isPostgresStore(f.storeKind) {
		return usageError("--store %q: want sqlite, postgres (connection from the PG* environment) or a postgres:// URL", f.storeKind)
	}
	var tlsConfig *tls.Config
	switch {
	case (f.tlsCert == "") != (f.tlsKey == ""):
		return usageError("--tls-cert and --tls-key go together: give both to serve HTTPS, or neither")
	case f.tlsCert != "":
		cert, err := tls.LoadX509KeyPair(f.tlsCert, f.tlsKey)
		if err != nil {
			return usageError("--tls-cert %s / --tls-key %s: %v (want a PEM certificate chain and its PEM private key)", f.tlsCert, f.tlsKey, err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return usageError("--log-level %q: want debug, info, warn or error", f.logLevel)
	}
	log := slog.New(slog.NewJSONHandler(a.stdio.Err, &slog.HandlerOptions{Level: level}))
	ctx := a.ctx
	data, err := openPlaneState(ctx, f.storeKind, f.data, f.keyFile, os.Getenv(plane.MasterKeyEnv), log)
	if err != nil {
		return withExit(ExitFailure, err)
	}
	defer data.Close()
	p, err := plane.New(ctx, plane.Config{
		Store: data.Store, Blobs: data.Blobs, Key: data.Key, MasterKey: data.MasterKey, Notifier: data.Notifier, Logger: log, Version: planeBuildVersion(),
		LeaseTTL: f.leaseTTL, HeartbeatInterval: f.heartbeat, ContractTTL: f.contractTTL, ConsentTimeout: f.consentTimeout,
		MaxClaimWait: f.maxClaimWait, RetentionInterval: f.retention, MaxBodyBytes: f.maxBody, MaxBlobBytes: f.maxBlob,
		RateLimit: f.rateLimit, RateBurst: f.rateBurst, SecureCookies: f.secureCookies,
	})
	if err != nil {
		return withExit(ExitFailure, err)
	}
	tokenFile := filepath.Join(f.data, plane.AdminTokenFile)
	token, created, err := p.Bootstrap(ctx, tokenFile)
	if err != nil {
		return withExit(ExitFailure, fmt.Errorf("bootstrap: %w", err))
	}
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return withExit(ExitFailure, fmt.Errorf("listen on %s: %w", f.listen, err))
	}
	url := "http://" + ln.Addr().String()
	if tlsConfig != nil {
		ln = tls.NewListener(ln, tlsConfig)
		url = "https://" + ln.Addr().String()
	}
	fmt.Fprintf(a.stdio.Err, "warrant plane serving on %s\n", url)
	fmt.Fprintf(a.stdio.Err, "plane key %s%s\n", data.Key.Public().ID(), map[bool]string{true: " (new)", false: ""}[data.KeyCreated])
	if created {
		fmt.Fprintf(a.stdio.Err, "bootstrap admin token (also in %s):\n  %s\nuse it: export WARRANT_PLANE=%s WARRANT_TOKEN=$(cat %s)\n", tokenFile, token, url, tokenFile)
	}
	srv := plane.NewServer(p)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		p.Close()
		return withExit(ExitFailure, fmt.Errorf("serve: %w", err))
	case <-ctx.Done():
	}
	fmt.Fprintln(a.stdio.Err, "warrant plane shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), f.shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return withExit(ExitFailure, fmt.Errorf("shutdown: %w", err))
	}
	<-errc
	return nil
}

// planeBuildVersion is the version /v1/info reports: the main module's
// version when the binary was built from a tagged module, else "dev".
func planeBuildVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
