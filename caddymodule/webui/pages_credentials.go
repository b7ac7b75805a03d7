package webui

// Credentials: names and metadata only (the API has no way to read a
// value, and the UI never asks); a value is written, never shown.
// Token sources (credentials that mint their own access tokens) are
// listed apart with their kind, expiry, last refresh and last error;
// they are defined through the API only, never from a form here.

import (
	"net/http"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

type credentialsData struct {
	// Credentials are the stored values; TokenSources the credentials
	// with a Kind. Both keep the API's order (by name).
	Credentials, TokenSources []apiwire.Credential
	Stores                    []apiwire.StoreStatus
	Err                       string
}

func (u *UI) credentials(c *call) {
	if c.r.Method == http.MethodPost {
		name := c.field("name")
		switch c.action() {
		case "put":
			value := c.r.PostForm.Get("value")
			_, err := c.do(http.MethodPut, "/api/v1/credentials/"+seg(name), apiwire.CredentialPutRequest{Value: &value}, nil)
			c.done(err, "credential "+name+" saved")
		case "delete":
			_, err := c.do(http.MethodDelete, "/api/v1/credentials/"+seg(name), nil, nil)
			c.done(err, "credential "+name+" deleted")
		default:
			c.done(errNoAction, "")
		}
		return
	}
	var d credentialsData
	var list apiwire.CredentialList
	if err := c.get("/api/v1/credentials", &list); err != nil {
		d.Err = errText(err)
	}
	var stores apiwire.StoreList
	if err := c.get("/api/v1/stores", &stores); err != nil && d.Err == "" {
		d.Err = errText(err)
	}
	for _, cr := range list.Credentials {
		if cr.Kind != "" {
			d.TokenSources = append(d.TokenSources, cr)
		} else {
			d.Credentials = append(d.Credentials, cr)
		}
	}
	d.Stores = stores.Stores
	c.render("credentials", "Credentials", d)
}
