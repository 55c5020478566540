package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/spf13/cobra"

	"warrant.dev/warrant/internal/fsutil"
)

// Config is what the CLI needs to reach a plane. It is read in layers:
// defaults, then the config file, then WARRANT_* environment variables,
// then flags; later layers win.
type Config struct {
	Plane string `toml:"plane" json:"plane"`           // plane URL, e.g. http://127.0.0.1:7070
	Token string `toml:"token" json:"token,omitempty"` // bearer token of a principal
	Trust string `toml:"trust" json:"trust,omitempty"` // trust file with pinned keys, for verify/receipt
	Pool  string `toml:"pool" json:"pool,omitempty"`   // default runner pool for 'warrant run'
}

// Sources says where each setting came from, for `warrant config show`.
type Sources struct {
	Plane, Token, Trust string
	File                string
}

type globalFlags struct {
	configPath string
	plane      string
	token      string
}

func (g *globalFlags) register(root *cobra.Command) {
	pf := root.PersistentFlags()
	pf.StringVar(&g.configPath, "config", "", "config file (default $WARRANT_CONFIG or <user config dir>/warrant/config.toml)")
	pf.StringVar(&g.plane, "plane", "", "plane URL, or the replicas of one deployment as URL,URL,… (overrides WARRANT_PLANE and the config file)")
	pf.StringVar(&g.token, "token", "", "bearer token (overrides WARRANT_TOKEN and the config file)")
}

// DefaultConfigDir is the directory of warrant's config and trust files.
func DefaultConfigDir() (string, error) {
	if d := os.Getenv("WARRANT_CONFIG_DIR"); d != "" {
		return d, nil
	}
	base, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("find the user config directory: %w (set WARRANT_CONFIG_DIR)", err)
	}
	return filepath.Join(base, "warrant"), nil
}

func (a *app) configPath() (string, error) {
	if a.global.configPath != "" {
		return a.global.configPath, nil
	}
	if p := os.Getenv("WARRANT_CONFIG"); p != "" {
		return p, nil
	}
	dir, err := DefaultConfigDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "config.toml"), nil
}

// loadConfig layers defaults, file, environment and flags.
func (a *app) loadConfig() (Config, Sources, error) {
	cfg := Config{Plane: "http://127.0.0.1:7070"}
	src := Sources{Plane: "default", Token: "unset", Trust: "unset"}
	path, err := a.configPath()
	if err != nil {
		return cfg, src, err
	}
	src.File = path
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return cfg, src, fmt.Errorf("read config %s: %w", path, err)
	default:
		var fileCfg Config
		md, err := toml.Decode(string(data), &fileCfg)
		if err != nil {
			return cfg, src, fmt.Errorf("config %s: %w", path, err)
		}
		if undecoded := md.Undecoded(); len(undecoded) > 0 {
			return cfg, src, fmt.Errorf("config %s: unknown setting %q (known: plane, token, trust, pool)", path, undecoded[0].String())
		}
		if fileCfg.Plane != "" {
			cfg.Plane, src.Plane = fileCfg.Plane, "file"
		}
		if fileCfg.Token != "" {
			cfg.Token, src.Token = fileCfg.Token, "file"
		}
		if fileCfg.Trust != "" {
			cfg.Trust, src.Trust = fileCfg.Trust, "file"
		}
		cfg.Pool = fileCfg.Pool
	}
	if v := os.Getenv("WARRANT_PLANE"); v != "" {
		cfg.Plane, src.Plane = v, "env WARRANT_PLANE"
	}
	if v := os.Getenv("WARRANT_TOKEN"); v != "" {
		cfg.Token, src.Token = v, "env WARRANT_TOKEN"
	}
	if v := os.Getenv("WARRANT_TRUST"); v != "" {
		cfg.Trust, src.Trust = v, "env WARRANT_TRUST"
	}
	if a.global.plane != "" {
		cfg.Plane, src.Plane = a.global.plane, "flag --plane"
	}
	if a.global.token != "" {
		cfg.Token, src.Token = a.global.token, "flag --token"
	}
	cfg.Plane = strings.TrimRight(cfg.Plane, "/")
	if cfg.Trust == "" {
		if dir, err := DefaultConfigDir(); err == nil {
			if p := filepath.Join(dir, "trust.json"); fileExists(p) {
				cfg.Trust, src.Trust = p, "default"
			}
		}
	}
	return cfg, src, nil
}

// writeConfig writes cfg to the config file, readable by the owner only
// (it holds a bearer token).
func writeConfig(path string, cfg Config) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create config directory: %w", err)
	}
	var b strings.Builder
	b.WriteString("# warrant CLI configuration. Environment (WARRANT_PLANE, WARRANT_TOKEN,\n# WARRANT_TRUST) and flags (--plane, --token) override these.\n")
	if err := toml.NewEncoder(&b).Encode(cfg); err != nil {
		return fmt.Errorf("encode config: %w", err)
	}
	return fsutil.WriteFileAtomic(path, []byte(b.String()), 0o600)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
