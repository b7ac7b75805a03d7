package webui

// Credentials: names and metadata only (the API has no way to read a
// value, and the UI never asks); a value is written, never shown.

import (
	"net/http"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

type credentialsData struct {
	Credentials []apiwire.Credential
	Stores      []apiwire.StoreStatus
	Err         string
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
	d.Credentials, d.Stores = list.Credentials, stores.Stores
	c.render("credentials", "Credentials", d)
}
