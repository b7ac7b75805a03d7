package procguard

// secretVars are the environment variables whose values this package
// keeps other processes from reading (on Linux, forgetSecrets removes
// them from /proc/self/environ): the ones agent-vault reads itself (the
// server's master password and admin token, the launcher's token) and
// the ones its documentation suggests for the external stores'
// credentials ({env.VAULT_TOKEN} and so on). A secret given under
// another name is not covered.
var secretVars = []string{
	"AGENT_VAULT_MASTER_PASSWORD",
	"AGENT_VAULT_ADMIN_TOKEN",
	"AGENT_VAULT_TOKEN",
	"VAULT_TOKEN",
	"VAULT_SECRET_ID",
	"INFISICAL_CLIENT_SECRET",
	"INFISICAL_TOKEN",
}

// WipeError names the secret variables whose values other processes may
// still read in this process's environment (on Linux,
// /proc/<pid>/environ), and why. It never holds a value.
type WipeError struct {
	Vars   []string
	Reason string
}

func (e *WipeError) Error() string {
	names := ""
	for i, n := range e.Vars {
		if i > 0 {
			names += ", "
		}
		names += n
	}
	return "still in the environment other processes can read: " + names + " (" + e.Reason + ")"
}

// SecretVars returns the names of the secret environment variables
// (secretVars), for callers that must keep their values from view in
// other ways (say, a command that would print the environment).
func SecretVars() []string {
	return append([]string(nil), secretVars...)
}
