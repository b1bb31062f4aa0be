package peer

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// errWrongClusterKey: the other side's certificate is not the one derived
// from our cluster key.
var errWrongClusterKey = errors.New("peer does not hold the cluster key")

// clusterTLS derives, from the 32-byte cluster key, one Ed25519 key pair and
// a self-signed certificate that every agent of the cluster computes
// identically. Both sides of a connection present it and accept only it:
// holding the cluster key is the credential, and TLS 1.3 encrypts.
func clusterTLS(key []byte) (server, client *tls.Config, err error) {
	seed, err := hkdf.Key(sha256.New, key, nil, "redleader cluster tls v1", ed25519.SeedSize)
	if err != nil {
		return nil, nil, fmt.Errorf("derive cluster tls key: %w", err)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "redleader-cluster"},
		NotBefore:    time.Unix(0, 0).UTC(),
		NotAfter:     time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{"redleader-cluster"},
	}
	der, err := x509.CreateCertificate(nil, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		return nil, nil, fmt.Errorf("make cluster certificate: %w", err)
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}
	verify := func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) != 1 || !bytes.Equal(raw[0], der) {
			return errWrongClusterKey
		}
		return nil
	}
	base := tls.Config{
		Certificates:          []tls.Certificate{cert},
		MinVersion:            tls.VersionTLS13,
		InsecureSkipVerify:    true, // replaced by VerifyPeerCertificate: exact match of the derived cert
		VerifyPeerCertificate: verify,
		ServerName:            "redleader-cluster",
	}
	server, client = base.Clone(), base.Clone()
	server.ClientAuth = tls.RequireAnyClientCert
	return server, client, nil
}
