package plane_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/plane"
)

// selfSignedCert writes a certificate for 127.0.0.1 and its key as PEM
// files and returns their paths.
func selfSignedCert(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "warrant test plane"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestServeTLS: with --tls-cert and --tls-key the plane serves HTTPS
// only; a client that trusts the certificate works (the CLI through
// SSL_CERT_FILE), one that does not is refused, and the web UI's session
// cookie is Secure.
func TestServeTLS(t *testing.T) {
	bin := warrantBinary(t)
	certFile, keyFile := selfSignedCert(t)
	data := t.TempDir()
	pp := startPlaneProcess(t, bin, data, "--tls-cert", certFile, "--tls-key", keyFile)
	if !strings.HasPrefix(pp.url, "https://127.0.0.1:") {
		t.Fatalf("the plane serves on %s, want https://127.0.0.1:…", pp.url)
	}
	tokenBytes, err := os.ReadFile(filepath.Join(data, plane.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(tokenBytes))

	pemBytes, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pemBytes)
	trusting := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	c, err := client.New(pp.url, client.WithToken(token), client.WithHTTPClient(trusting))
	if err != nil {
		t.Fatal(err)
	}
	if me, err := c.WhoAmI(bg); err != nil || me.Principal.Role != client.RoleAdmin {
		t.Fatalf("whoami over TLS: %+v %v", me, err)
	}

	// A client without the certificate is refused by TLS.
	plain, _ := client.New(pp.url, client.WithToken(token))
	_, err = plain.WhoAmI(bg)
	var unknownAuthority x509.UnknownAuthorityError
	if !errors.As(err, &unknownAuthority) {
		t.Fatalf("a client that does not trust the certificate: %v, want x509.UnknownAuthorityError", err)
	}
	// Plain HTTP to the TLS port gets no API.
	if resp, err := http.Get(strings.Replace(pp.url, "https://", "http://", 1) + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("plain HTTP was served on the TLS port")
		}
	}

	// The CLI trusts a private CA through SSL_CERT_FILE.
	cli := exec.Command(bin, "runs", "--json")
	cli.Env = append(os.Environ(), "WARRANT_CONFIG_DIR="+t.TempDir(), "WARRANT_PLANE="+pp.url, "WARRANT_TOKEN="+token, "SSL_CERT_FILE="+certFile)
	if out, err := cli.CombinedOutput(); err != nil {
		t.Fatalf("warrant runs over TLS with SSL_CERT_FILE: %v\n%s", err, out)
	}

	// The web UI's cookies are Secure.
	checkSignInCookies(t, trusting, pp.url, true)
}

// checkSignInCookies loads the UI's sign-in page, which sets a cookie,
// and checks every cookie it sets is HttpOnly and Secure exactly when
// secure says.
func checkSignInCookies(t *testing.T, c *http.Client, planeURL string, secure bool) {
	t.Helper()
	resp, err := c.Get(planeURL + "/ui/signin")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if len(resp.Cookies()) == 0 {
		t.Fatal("the sign-in page set no cookie")
	}
	for _, ck := range resp.Cookies() {
		if ck.Secure != secure || !ck.HttpOnly {
			t.Errorf("%s: cookie %s Secure %v HttpOnly %v, want Secure %v and HttpOnly", planeURL, ck.Name, ck.Secure, ck.HttpOnly, secure)
		}
	}
}

// TestServeTLSFlags: half a TLS configuration, or files that are not a
// certificate and key, stop the plane at start with an error that says
// what to give.
func TestServeTLSFlags(t *testing.T) {
	bin := warrantBinary(t)
	certFile, keyFile := selfSignedCert(t)
	for name, args := range map[string][]string{
		"cert only":    {"--tls-cert", certFile},
		"key only":     {"--tls-key", keyFile},
		"swapped":      {"--tls-cert", keyFile, "--tls-key", certFile},
		"no such file": {"--tls-cert", certFile + ".missing", "--tls-key", keyFile},
	} {
		cmd := exec.Command(bin, append([]string{"plane", "serve", "--data", t.TempDir(), "--listen", "127.0.0.1:0"}, args...)...)
		cmd.Env = append(os.Environ(), "WARRANT_CONFIG_DIR="+t.TempDir())
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Errorf("%s: the plane started", name)
			continue
		}
		if !strings.Contains(string(out), "--tls-cert") || strings.Contains(string(out), "PRIVATE KEY") {
			t.Errorf("%s: %s", name, out)
		}
	}
}

// TestSecureCookiesBehindAProxy: a plane served over plain HTTP to a
// TLS-terminating proxy marks the UI's cookies Secure with
// --secure-cookies, and only then.
func TestSecureCookiesBehindAProxy(t *testing.T) {
	bin := warrantBinary(t)
	for _, secure := range []bool{false, true} {
		var extra []string
		if secure {
			extra = append(extra, "--secure-cookies")
		}
		pp := startPlaneProcess(t, bin, t.TempDir(), extra...)
		checkSignInCookies(t, http.DefaultClient, pp.url, secure)
	}
}
