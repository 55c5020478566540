package cli

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"warrant.dev/warrant/protocol"
)

func init() { register(newVerifyCmd) }

// checkDescriptions says in words what each check establishes.
var checkDescriptions = map[string]string{
	protocol.CheckContractSignature:   "the plane signed the contract",
	protocol.CheckReceiptBinding:      "the receipt is bound to this contract",
	protocol.CheckRunnerKey:           "the runner key and pool match the receipt",
	protocol.CheckRunnerSignature:     "the runner signed the receipt",
	protocol.CheckEventChain:          "the event chain is intact from the contract to the receipt's head",
	protocol.CheckTerminalStatus:      "the last event matches the receipt's status",
	protocol.CheckWorkspaceIn:         "the receipt names the contract's workspace",
	protocol.CheckSecretsReleased:     "the secrets listed are exactly those released",
	protocol.CheckDiffArtifact:        "the diff is an artifact recorded in the events",
	protocol.CheckPlaneCountersign:    "the plane countersigned the receipt",
	protocol.CheckNetworkAccessed:     "the hosts listed are exactly those in the network events",
	protocol.CheckBoundaryDisclosures: "the disclosures listed are exactly those in the events",
	protocol.CheckOrgSignature:        "the org signed the contract",
	protocol.CheckPinnedKeys:          "the keys are pinned by your trust file",
}

// verifyJSON is the --json output of `warrant verify`.
type verifyJSON struct {
	OK      bool              `json:"ok"`      // valid and trusted: exit 0
	Valid   bool              `json:"valid"`   // every integrity check holds
	Trusted bool              `json:"trusted"` // and the keys are pinned
	RunID   string            `json:"runId,omitempty"`
	Status  string            `json:"status,omitempty"`
	Trust   string            `json:"trustFile,omitempty"`
	Note    string            `json:"note,omitempty"`
	Checks  []verifyCheckJSON `json:"checks"`
	Error   string            `json:"error,omitempty"`
}

type verifyCheckJSON struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Error  string `json:"error,omitempty"`
	Seq    *int64 `json:"seq,omitempty"`
	Field  string `json:"field,omitempty"`
	Signer string `json:"signer,omitempty"`
}

func newVerifyCmd(a *app) *cobra.Command {
	var trustPath string
	cmd := &cobra.Command{
		Use:   "verify BUNDLE",
		Short: "Verify a run's bundle offline against pinned keys",
		Long: `Verify a warrant.bundle.v1 file (or - for stdin) offline: the contract's
plane signature, the hash chain of events, the receipt's runner signature and
plane countersignature, and that every list in the receipt matches the events.

Keys are trusted only when your trust file pins them (--trust, WARRANT_TRUST,
or <config dir>/warrant/trust.json, which 'warrant dev' writes). A bundle that
is merely consistent with the keys it carries proves nothing on its own.

Exit status: 0 verified and trusted; 1 verification failed; 3 consistent but
the keys are not pinned; 2 usage error.`,
		Example: `  warrant verify run.bundle.json
  warrant verify --trust prod-trust.json run.bundle.json
  warrant receipt RUN --bundle - | warrant verify -`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runVerify(args[0], trustPath)
		},
	}
	cmd.Flags().StringVar(&trustPath, "trust", "", "trust file pinning the plane (and optionally runner and org) keys")
	return cmd
}

func (a *app) runVerify(bundlePath, trustPath string) error {
	data, err := readInput(a.stdio.In, bundlePath, protocol.MaxDocumentBytes)
	if err != nil {
		return err
	}
	trust, trustFile, err := a.loadTrust(trustPath)
	if err != nil {
		return err
	}
	bundle, err := protocol.ParseBundle(data)
	if err != nil {
		if a.json {
			_ = printJSON(a.stdio.Out, verifyJSON{Checks: []verifyCheckJSON{}, Error: err.Error(), Trust: trustFile})
			return quietExit(ExitFailure)
		}
		return withExit(ExitFailure, fmt.Errorf("%s is not a valid bundle: %w", bundlePath, err))
	}
	rep := protocol.VerifyBundle(bundle, trust)
	return a.reportVerification(bundle, rep, trustFile)
}

// loadTrust reads the trust file named by flag, or by configuration.
func (a *app) loadTrust(flagPath string) (*protocol.TrustStore, string, error) {
	path := flagPath
	if path == "" {
		cfg, _, err := a.loadConfig()
		if err != nil {
			return nil, "", err
		}
		path = cfg.Trust
	}
	if path == "" {
		return nil, "", nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, "", withExit(ExitUsage, fmt.Errorf("read trust file: %w", err))
	}
	ts, err := protocol.ParseTrustFile(data)
	if err != nil {
		return nil, "", withExit(ExitUsage, fmt.Errorf("trust file %s: %w", path, err))
	}
	return ts, path, nil
}

func (a *app) reportVerification(b *protocol.Bundle, rep *protocol.Report, trustFile string) error {
	out := verifyJSON{
		OK: rep.Trusted(), Valid: rep.Valid(), Trusted: rep.Trusted(),
		RunID: b.Contract.RunID, Status: b.Receipt.Status, Trust: trustFile, Note: rep.Note,
		Checks: []verifyCheckJSON{},
	}
	for _, c := range rep.Checks {
		j := verifyCheckJSON{Name: c.Name, OK: c.Err == nil}
		if c.Err != nil {
			j.Error = c.Err.Error()
			var ve *protocol.VerifyError
			if errors.As(c.Err, &ve) {
				j.Error = ve.Err.Error()
				if ve.Field != "" {
					j.Error = ve.Field + ": " + j.Error
				}
				if ve.Seq >= 0 {
					seq := ve.Seq
					j.Seq = &seq
				}
				j.Field, j.Signer = ve.Field, ve.Signer
			}
		}
		out.Checks = append(out.Checks, j)
	}
	if a.json {
		if err := printJSON(a.stdio.Out, out); err != nil {
			return err
		}
	} else {
		a.printVerification(out)
	}
	switch {
	case out.Trusted:
		return nil
	case out.Valid:
		return quietExit(ExitUntrusted)
	default:
		return quietExit(ExitFailure)
	}
}

func (a *app) printVerification(v verifyJSON) {
	w := a.stdio.Out
	st := styleFor(w)
	for _, c := range v.Checks {
		desc := checkDescriptions[c.Name]
		if c.OK {
			fmt.Fprintf(w, "%s %-23s %s\n", st.green("✓"), c.Name, desc)
			continue
		}
		if c.Name == protocol.CheckPinnedKeys && v.Valid {
			fmt.Fprintf(w, "%s %-23s %s\n", st.yellow("!"), c.Name, c.Error)
			continue
		}
		fmt.Fprintf(w, "%s %-23s %s\n", st.red("✗"), c.Name, c.Error)
	}
	switch {
	case v.Trusted:
		fmt.Fprintf(w, "%s run %s (%s): %s\n", st.green(st.bold("VERIFIED")), v.RunID, v.Status, v.Note)
	case v.Valid:
		fmt.Fprintf(w, "%s run %s (%s) is internally consistent, but its keys are not pinned.\n", st.yellow(st.bold("NOT TRUSTED")), v.RunID, v.Status)
		fmt.Fprintln(w, "  Pin the plane's key with --trust FILE (see 'warrant keys trust --help').")
	default:
		fmt.Fprintf(w, "%s run %s: the bundle does not verify.\n", st.red(st.bold("FAILED")), v.RunID)
	}
}

// readInput reads a file, or stdin for "-", refusing more than limit bytes.
func readInput(stdin io.Reader, path string, limit int64) ([]byte, error) {
	var r io.Reader
	if path == "-" {
		r = stdin
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, withExit(ExitUsage, fmt.Errorf("open %s: %w", path, err))
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(data)) > limit {
		return nil, withExit(ExitFailure, fmt.Errorf("%s is larger than %d bytes: not a bundle", path, limit))
	}
	return data, nil
}
