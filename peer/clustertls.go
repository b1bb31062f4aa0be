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
	"slices"
	"time"
)

// errWrongClusterKey: the other side's certificate is not one derived from
// our cluster keys.
var errWrongClusterKey = errors.New("peer does not hold the cluster key")

// clusterTLS derives, from each 32-byte cluster key, one Ed25519 key pair
// and a self-signed certificate that every agent holding that key computes
// identically. Both sides of a connection present the certificate of the
// first (primary) key and accept the certificate of any of the keys:
// holding a cluster key is the credential, and TLS 1.3 encrypts. With
// several keys a fleet rotates without a flag day: an agent on [old new]
// presents old's certificate and accepts new's, one on [new old] the
// reverse, so agents one rotation step apart always connect.
func clusterTLS(keys ...[]byte) (server, client *tls.Config, err error) {
	if len(keys) == 0 {
		return nil, nil, errors.New("cluster tls: no key")
	}
	var primary tls.Certificate
	accepted := make([][]byte, 0, len(keys))
	for i, key := range keys {
		cert, err := clusterCert(key)
		if err != nil {
			return nil, nil, err
		}
		if i == 0 {
			primary = cert
		}
		accepted = append(accepted, cert.Certificate[0])
	}
	verify := func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) != 1 || !slices.ContainsFunc(accepted, func(der []byte) bool { return bytes.Equal(raw[0], der) }) {
			return errWrongClusterKey
		}
		return nil
	}
	base := tls.Config{
		Certificates:          []tls.Certificate{primary},
		MinVersion:            tls.VersionTLS13,
		InsecureSkipVerify:    true, // replaced by VerifyPeerCertificate: exact match of a derived cert
		VerifyPeerCertificate: verify,
		ServerName:            "redleader-cluster",
	}
	server, client = base.Clone(), base.Clone()
	server.ClientAuth = tls.RequireAnyClientCert
	return server, client, nil
}

// clusterCert derives the certificate of one cluster key.
func clusterCert(key []byte) (tls.Certificate, error) {
	seed, err := hkdf.Key(sha256.New, key, nil, "redleader cluster tls v1", ed25519.SeedSize)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("derive cluster tls key: %w", err)
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
		return tls.Certificate{}, fmt.Errorf("make cluster certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}, nil
}
