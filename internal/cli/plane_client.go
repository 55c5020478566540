package cli

import (
	"context"
	"errors"
	"fmt"

	"warrant.dev/warrant/client"
)

// planeClient returns an SDK client for the configured plane and token.
func (a *app) planeClient() (*client.Client, Config, error) {
	cfg, _, err := a.loadConfig()
	if err != nil {
		return nil, cfg, err
	}
	if cfg.Token == "" {
		return nil, cfg, withExit(ExitUsage, errors.New("no token configured: run 'warrant dev' (which writes one), or set WARRANT_TOKEN or --token"))
	}
	c, err := client.New(cfg.Plane, client.WithToken(cfg.Token), client.WithUserAgent("warrant-cli/"+client.Version))
	if err != nil {
		return nil, cfg, withExit(ExitUsage, err)
	}
	return c, cfg, nil
}

// explain turns an API or transport error into one that says what to do.
func explain(err error, cfg Config) error {
	if err == nil {
		return nil
	}
	var te *client.TransportError
	switch {
	case errors.Is(err, context.Canceled):
		return withExit(ExitFailure, errors.New("interrupted"))
	case errors.As(err, &te):
		return fmt.Errorf("cannot reach the plane at %s: %v\n  start one with 'warrant dev' or 'warrant plane serve', or point --plane / WARRANT_PLANE at it", cfg.Plane, te.Err)
	case errors.Is(err, client.ErrUnauthenticated):
		return fmt.Errorf("%v\n  the token was refused: check WARRANT_TOKEN / --token, or ask an admin for a new one ('warrant tokens create')", err)
	case errors.Is(err, client.ErrForbidden):
		return fmt.Errorf("%v\n  your token's role may not do this: 'warrant whoami' shows it", err)
	case errors.Is(err, client.ErrRateLimited):
		return fmt.Errorf("%v\n  slow down and retry in a moment", err)
	}
	return err
}
