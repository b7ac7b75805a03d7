package launcher

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiclient"
)

// systemBundlePaths are the usual locations of the system's PEM root bundle
// on Linux distributions, the BSDs and macOS, in order of preference.
var systemBundlePaths = []string{
	"/etc/ssl/certs/ca-certificates.crt",                // Debian, Ubuntu, Gentoo, Arch, Alpine
	"/etc/pki/tls/certs/ca-bundle.crt",                  // Fedora, RHEL 6
	"/etc/ssl/ca-bundle.pem",                            // openSUSE
	"/etc/pki/tls/cacert.pem",                           // OpenELEC
	"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", // CentOS, RHEL 7+
	"/etc/ssl/cert.pem",                                 // Alpine, BSDs, macOS
}

// maxBundleBytes caps how much of a system bundle we copy; real bundles are
// a few hundred KiB.
const maxBundleBytes = 16 << 20

// parseCACerts checks that text holds one or more PEM CERTIFICATE blocks that
// parse as X.509 and nothing else but whitespace (fail closed: a private key or junk must
// never land in a trust store). It returns the certificates re-encoded as
// clean PEM.
func parseCACerts(text string) ([]byte, error) {
	var out bytes.Buffer
	rest := []byte(text)
	for {
		rest = bytes.TrimLeft(rest, " \t\r\n")
		if len(rest) == 0 {
			break
		}
		var block *pem.Block
		if bytes.HasPrefix(rest, []byte("-----BEGIN ")) {
			block, rest = pem.Decode(rest)
		}
		if block == nil {
			return nil, errors.New("server returned a ca_pem that is not a list of PEM certificates")
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("server returned a ca_pem holding a %q block", apiclient.Printable(block.Type, 64))
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return nil, errors.New("server returned a ca_pem with an unparsable certificate")
		}
		if err := pem.Encode(&out, &pem.Block{Type: "CERTIFICATE", Bytes: block.Bytes}); err != nil {
			return nil, err
		}
	}
	if out.Len() == 0 {
		return nil, errors.New("server returned an empty ca_pem")
	}
	return out.Bytes(), nil
}

// readSystemRoots returns the system's root bundle: sslCertFile if set and
// readable, else the first readable of candidates. It returns nil if none is.
func readSystemRoots(sslCertFile string, candidates []string) []byte {
	if sslCertFile != "" {
		if data := readBundle(sslCertFile); data != nil {
			return data
		}
	}
	for _, path := range candidates {
		if data := readBundle(path); data != nil {
			return data
		}
	}
	return nil
}

// readBundle returns the content of a non-empty regular file, or nil.
func readBundle(path string) []byte {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	if info, err := f.Stat(); err != nil || !info.Mode().IsRegular() {
		return nil
	}
	data, err := io.ReadAll(io.LimitReader(f, maxBundleBytes))
	if err != nil || len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	return data
}

// joinPEM concatenates PEM texts, making sure each starts on its own line.
func joinPEM(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		if len(out) > 0 && out[len(out)-1] != '\n' {
			out = append(out, '\n')
		}
		out = append(out, p...)
	}
	return out
}
