package state

import (
	"strings"
	"testing"
)

// FuzzRebind: rebind changes nothing but '$' to '?' (so the length and
// every other byte stay), and a '$' it changes is followed by a digit.
func FuzzRebind(f *testing.F) {
	for _, s := range []string{"SELECT $1", "'$1' $2", "\"$3\" -- $4\n$5", "$", "$$1", "'", "--", "a'b''c'$1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := rebind(in)
		if len(out) != len(in) {
			t.Fatalf("length changed: %q -> %q", in, out)
		}
		for i := range in {
			if in[i] == out[i] {
				continue
			}
			if in[i] != '$' || out[i] != '?' || i+1 >= len(in) || in[i+1] < '0' || in[i+1] > '9' {
				t.Fatalf("byte %d changed: %q -> %q", i, in, out)
			}
		}
		if !strings.ContainsAny(in, "'\"-") && strings.Contains(out, "$") {
			for i := 0; i+1 < len(out); i++ {
				if out[i] == '$' && out[i+1] >= '0' && out[i+1] <= '9' {
					t.Fatalf("placeholder left: %q -> %q", in, out)
				}
			}
		}
	})
}

// FuzzDSNPasswordNeverInError: whatever is around it, a DSN's password
// is not repeated by Validate's error. Passwords of six or more
// characters that are not part of the rest of the DSN are checked (a
// shorter or repeated one could appear in the message by coincidence).
func FuzzDSNPasswordNeverInError(f *testing.F) {
	f.Add("u", "S3cr3tPw", "host:notaport", "db", "sslmode=bogus")
	f.Add("u", "pa@ss:wd", "ho st", "db", "")
	f.Add("", "p/w@rd99", "[::1", "db", "connect_timeout=zz")
	f.Add("u", "x%zzsecret", "h", "d", "port=zz")
	f.Fuzz(func(t *testing.T, user, pw, host, db, query string) {
		if len(pw) < 6 {
			return
		}
		for _, form := range []string{
			"postgres://" + user + ":" + pw + "@" + host + "/" + db + "?" + query,
			"postgresql://" + user + ":" + pw + "@" + host + "/" + db,
			"postgres://" + user + "@" + host + "/" + db + "?password=" + pw + "&" + query,
			"host=" + host + " user=" + user + " password=" + pw + " dbname=" + db + " " + query,
			"host=" + host + " password='" + pw + "' " + query,
		} {
			rest := strings.Replace(form, pw, "", 1)
			if strings.Contains(rest, pw) || strings.Contains("state postgres: the DSN does not parse: cannot", pw) {
				continue
			}
			err := Config{Backend: BackendPostgres, DSN: form}.Validate()
			if err != nil && strings.Contains(err.Error(), pw) {
				t.Fatalf("DSN %q: error %q contains the password", form, err)
			}
		}
	})
}
