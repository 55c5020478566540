package workspace

import "time"

// SetRacyWindow changes how recently modified a file may be and still be
// remembered by the hash cache, so tests need not sleep; it returns a
// function that restores the default.
func SetRacyWindow(d time.Duration) (restore func()) {
	old := racyWindow
	racyWindow = d
	return func() { racyWindow = old }
}

// MatchPattern exposes the pattern matcher to the external tests.
func MatchPattern(patterns []string, fold bool, p string) (string, bool, error) {
	s, err := compilePatterns(patterns, fold)
	if err != nil {
		return "", false, err
	}
	pat, ok := s.Match(p)
	return pat, ok, nil
}

// ValidPath exposes the allocation-free path check.
func ValidPath(p string) bool { return validPath(p) }

// GitCommands returns how many git processes the package has started.
func GitCommands() int64 { return gitCommands.Load() }
