package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"warrant.dev/warrant/internal/fsutil"
	"warrant.dev/warrant/protocol"
)

func init() { register(newKeysCmd) }

func newKeysCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Make and inspect Ed25519 keys and trust files",
		Args:  noArgs,
	}
	cmd.AddCommand(a.keysGenerateCmd(), a.keysShowCmd(), a.keysTrustCmd())
	return cmd
}

type keyJSON struct {
	KeyID        string `json:"keyId"`
	Kind         string `json:"kind"` // "public" or "private"
	PublicKeyPEM string `json:"publicKeyPem"`
	PrivateFile  string `json:"privateFile,omitempty"`
	PublicFile   string `json:"publicFile,omitempty"`
}

func (a *app) keysGenerateCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "generate --out PREFIX",
		Short: "Generate an Ed25519 key pair (PREFIX.key.pem 0600, PREFIX.pub.pem)",
		Example: `  warrant keys generate --out ./org
  # writes ./org.key.pem (PKCS#8, mode 0600) and ./org.pub.pem (SPKI)`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return usageError("--out PREFIX is required (the key is written to PREFIX.key.pem and PREFIX.pub.pem)")
			}
			privPath, pubPath := out+".key.pem", out+".pub.pem"
			for _, p := range []string{privPath, pubPath} {
				if _, err := os.Stat(p); err == nil {
					return withExit(ExitFailure, fmt.Errorf("%s already exists: refusing to overwrite a key (choose another --out)", p))
				}
			}
			key, err := protocol.GenerateKey(nil)
			if err != nil {
				return err
			}
			privPEM, err := key.PEM()
			if err != nil {
				return err
			}
			if err := os.MkdirAll(filepath.Dir(privPath), 0o700); err != nil {
				return err
			}
			if err := fsutil.WriteFileExclusive(privPath, []byte(privPEM), 0o600); err != nil {
				return err
			}
			if err := fsutil.WriteFileExclusive(pubPath, []byte(key.Public().PEM()), 0o644); err != nil {
				return err
			}
			k := keyJSON{KeyID: key.Public().ID(), Kind: "private", PublicKeyPEM: key.Public().PEM(), PrivateFile: privPath, PublicFile: pubPath}
			if a.json {
				return printJSON(a.stdio.Out, k)
			}
			fmt.Fprintf(a.stdio.Out, "%s\n", k.KeyID)
			fmt.Fprintf(a.stdio.Err, "wrote %s (private, 0600) and %s\n", privPath, pubPath)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "path prefix of the key files")
	return cmd
}

func (a *app) keysShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "show FILE",
		Short:   "Show the key id and public key of a PEM key file (public or private)",
		Example: "  warrant keys show ~/.local/share/warrant/plane/plane.key.pem",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := readKeyFile(args[0])
			if err != nil {
				return err
			}
			if a.json {
				return printJSON(a.stdio.Out, k)
			}
			fmt.Fprintf(a.stdio.Out, "key id:  %s\nkind:    %s\n%s", k.KeyID, k.Kind, k.PublicKeyPEM)
			return nil
		},
	}
}

func readKeyFile(path string) (keyJSON, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return keyJSON{}, withExit(ExitUsage, fmt.Errorf("read key: %w", err))
	}
	text := string(data)
	if strings.Contains(text, "PRIVATE KEY") {
		priv, err := protocol.ParsePrivateKeyPEM(text)
		if err != nil {
			return keyJSON{}, withExit(ExitFailure, fmt.Errorf("%s: %w", path, err))
		}
		return keyJSON{KeyID: priv.Public().ID(), Kind: "private", PublicKeyPEM: priv.Public().PEM()}, nil
	}
	pub, err := protocol.ParsePublicKeyPEM(text)
	if err != nil {
		return keyJSON{}, withExit(ExitFailure, fmt.Errorf("%s: %w", path, err))
	}
	return keyJSON{KeyID: pub.ID(), Kind: "public", PublicKeyPEM: pub.PEM()}, nil
}

func (a *app) keysTrustCmd() *cobra.Command {
	var file, role string
	cmd := &cobra.Command{
		Use:   "trust --role plane|runner|org KEYFILE...",
		Short: "Pin public keys in a trust file used by 'warrant verify'",
		Long: `Add public keys (PEM files; a private key file adds its public half) to a
trust file, creating it when missing. 'warrant verify' trusts a bundle only
when the plane key that signed it is pinned here; pinning runner or org keys
additionally requires every bundle's runner or org key to be among them.`,
		Example: `  warrant keys trust --role plane plane.pub.pem --file prod-trust.json
  warrant verify --trust prod-trust.json run.bundle.json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError("name at least one key file")
			}
			if role != protocol.SignerPlane && role != protocol.SignerRunner && role != protocol.SignerOrg {
				return usageError("--role must be plane, runner or org, got %q", role)
			}
			if file == "" {
				dir, err := DefaultConfigDir()
				if err != nil {
					return err
				}
				file = filepath.Join(dir, "trust.json")
			}
			ts := protocol.NewTrustStore()
			if data, err := os.ReadFile(file); err == nil {
				if ts, err = protocol.ParseTrustFile(data); err != nil {
					return withExit(ExitFailure, fmt.Errorf("existing trust file %s: %w (fix or move it; nothing was changed)", file, err))
				}
			} else if !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			var added []string
			for _, p := range args {
				k, err := readKeyFile(p)
				if err != nil {
					return err
				}
				pub, err := protocol.ParsePublicKeyPEM(k.PublicKeyPEM)
				if err != nil {
					return err
				}
				ts.Add(role, pub)
				added = append(added, pub.ID())
			}
			if err := writeTrustFile(file, ts); err != nil {
				return err
			}
			if a.json {
				return printJSON(a.stdio.Out, map[string]any{"file": file, "role": role, "added": added})
			}
			for _, id := range added {
				fmt.Fprintf(a.stdio.Out, "pinned %s key %s in %s\n", role, id, file)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&file, "file", "", "trust file (default <config dir>/warrant/trust.json)")
	cmd.Flags().StringVar(&role, "role", "plane", "role the keys are trusted for: plane, runner or org")
	return cmd
}

func writeTrustFile(path string, ts *protocol.TrustStore) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	var b strings.Builder
	if err := printJSON(&b, ts.File()); err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(path, []byte(b.String()), 0o644)
}
