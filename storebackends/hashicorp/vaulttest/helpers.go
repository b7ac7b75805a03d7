package vaulttest

import (
	"context"
	"fmt"
	"testing"

	"github.com/hashicorp/vault/api"
)

// The helpers below set up server state as root through s.Client and
// fail the test on any error. Mount arguments are mount paths without
// slashes, e.g. "secret" or "approle".

// EnableKVv1 mounts a KV version 1 secrets engine at mount.
func (s *Server) EnableKVv1(t testing.TB, mount string) {
	t.Helper()
	s.enableKV(t, mount, "1")
}

// EnableKVv2 mounts a KV version 2 secrets engine at mount and waits
// until it accepts requests.
func (s *Server) EnableKVv2(t testing.TB, mount string) {
	t.Helper()
	s.enableKV(t, mount, "2")
}

func (s *Server) enableKV(t testing.TB, mount, version string) {
	t.Helper()
	err := s.Client.Sys().Mount(mount, &api.MountInput{
		Type:    "kv",
		Options: map[string]string{"version": version},
	})
	if err != nil {
		t.Fatalf("vaulttest: mounting KV v%s at %q: %v", version, mount, err)
	}
	if version == "2" {
		// A new KV v2 mount refuses requests until it has set itself up.
		if err := s.waitReadyPath(mount + "/config"); err != nil {
			t.Fatalf("vaulttest: KV v2 at %q: %v", mount, err)
		}
	}
}

// waitReadyPath polls a read of path until it succeeds or the server's
// readiness deadline passes.
func (s *Server) waitReadyPath(path string) error {
	probe := func(ctx context.Context) error {
		_, err := s.Client.Logical().ReadWithContext(ctx, path)
		return err
	}
	return s.poll(probe)
}

// EnableAppRole enables the AppRole auth method at mount.
func (s *Server) EnableAppRole(t testing.TB, mount string) {
	t.Helper()
	if err := s.Client.Sys().EnableAuthWithOptions(mount, &api.EnableAuthOptions{Type: "approle"}); err != nil {
		t.Fatalf("vaulttest: enabling AppRole at %q: %v", mount, err)
	}
}

// CreateAppRole creates (or replaces) role on the AppRole mount with
// the given token policies and token TTL (a Vault duration such as
// "1h"; empty keeps Vault's default), and returns its role ID and a new
// secret ID.
func (s *Server) CreateAppRole(t testing.TB, mount, role string, policies []string, tokenTTL string) (roleID, secretID string) {
	t.Helper()
	rolePath := fmt.Sprintf("auth/%s/role/%s", mount, role)
	params := map[string]any{"token_policies": policies}
	if tokenTTL != "" {
		params["token_ttl"] = tokenTTL
	}
	if _, err := s.Client.Logical().Write(rolePath, params); err != nil {
		t.Fatalf("vaulttest: creating AppRole %q: %v", rolePath, err)
	}
	read, err := s.Client.Logical().Read(rolePath + "/role-id")
	if err != nil {
		t.Fatalf("vaulttest: reading role ID of %q: %v", rolePath, err)
	}
	issued, err := s.Client.Logical().Write(rolePath+"/secret-id", nil)
	if err != nil {
		t.Fatalf("vaulttest: issuing secret ID for %q: %v", rolePath, err)
	}
	return stringField(t, read, "role_id"), stringField(t, issued, "secret_id")
}

// WritePolicy creates or replaces the ACL policy name.
func (s *Server) WritePolicy(t testing.TB, name, hcl string) {
	t.Helper()
	if err := s.Client.Sys().PutPolicy(name, hcl); err != nil {
		t.Fatalf("vaulttest: writing policy %q: %v", name, err)
	}
}

// PutKV2 writes data as a new version of the KV v2 secret at path and
// returns that version number.
func (s *Server) PutKV2(t testing.TB, mount, path string, data map[string]any) (version int) {
	t.Helper()
	written, err := s.Client.KVv2(mount).Put(context.Background(), path, data)
	if err != nil {
		t.Fatalf("vaulttest: writing KV v2 %s/%s: %v", mount, path, err)
	}
	if written.VersionMetadata == nil {
		t.Fatalf("vaulttest: writing KV v2 %s/%s: no version in the response", mount, path)
	}
	return written.VersionMetadata.Version
}

// PutKV1 writes data to the KV v1 secret at path, replacing it.
func (s *Server) PutKV1(t testing.TB, mount, path string, data map[string]any) {
	t.Helper()
	if err := s.Client.KVv1(mount).Put(context.Background(), path, data); err != nil {
		t.Fatalf("vaulttest: writing KV v1 %s/%s: %v", mount, path, err)
	}
}

// DeleteKV2 soft-deletes the latest version of the KV v2 secret at path
// (it can be undeleted; older versions stay readable).
func (s *Server) DeleteKV2(t testing.TB, mount, path string) {
	t.Helper()
	if err := s.Client.KVv2(mount).Delete(context.Background(), path); err != nil {
		t.Fatalf("vaulttest: deleting KV v2 %s/%s: %v", mount, path, err)
	}
}

// DestroyKV2 permanently destroys the given versions of the KV v2
// secret at path.
func (s *Server) DestroyKV2(t testing.TB, mount, path string, versions []int) {
	t.Helper()
	if err := s.Client.KVv2(mount).Destroy(context.Background(), path, versions); err != nil {
		t.Fatalf("vaulttest: destroying versions %v of KV v2 %s/%s: %v", versions, mount, path, err)
	}
}

// CreateToken creates a token with the given policies (plus Vault's
// "default" policy, which lets it look itself up and renew itself), TTL
// (a Vault duration such as "30s"; empty for the default) and
// renewability, as a child of the root token.
func (s *Server) CreateToken(t testing.TB, policies []string, ttl string, renewable bool) string {
	t.Helper()
	created, err := s.Client.Auth().Token().Create(&api.TokenCreateRequest{
		Policies:  policies,
		TTL:       ttl,
		Renewable: &renewable,
	})
	if err != nil {
		t.Fatalf("vaulttest: creating token: %v", err)
	}
	if created.Auth == nil || created.Auth.ClientToken == "" {
		t.Fatalf("vaulttest: creating token: no token in the response")
	}
	return created.Auth.ClientToken
}

// stringField returns the non-empty string field key of a response.
func stringField(t testing.TB, secret *api.Secret, key string) string {
	t.Helper()
	if secret == nil {
		t.Fatalf("vaulttest: empty response, wanted %q", key)
	}
	v, ok := secret.Data[key].(string)
	if !ok || v == "" {
		t.Fatalf("vaulttest: response has no %q", key)
	}
	return v
}
