// Package webui is the web UI of the management listener: pages
// rendered on the server with html/template, a small embedded CSS and
// JS file, no external URL. It is a client of the management API: every
// read and write is an in-process request to the API's handler carrying
// the browser's login cookie (and, for a change, the CSRF header), so
// the role rules, validation and audit are the API's own.
//
// Stable hooks for tests (browser journeys rely on them; keep them):
//
//	Pages (GET):  /  /login  /credentials  /services  /sessions
//	              /activity  /agents  /requests  /operators  /audit  /ca
//	Sign out:     POST /logout (form id "logout-form")
//	Assets:       /static/app.css  /static/app.js
//	Signed out:   any page GET → 303 /login?next=<path>
//	Every form:   hidden inputs "csrf" (the token, also in
//	              <meta name="csrf-token">) and "action"; it posts to
//	              its own page's path; then 303 back with a flash.
//	Flash:        <p id="flash" class="flash ok|error">text</p>, after the
//	              303 to <page>?ok=|error=<text>&sig=<HMAC keyed by the
//	              CSRF token> (an unsigned one is not shown; /login shows
//	              only ?ok=signed-out)
//	Nav:          <nav id="nav">, links a#nav-<page> (nav-overview,
//	              nav-credentials, ..., nav-operators only for owners)
//	Role:         <body data-role="viewer|admin|owner">
//
//	/login        form#login-form: name, password, next
//	              form#admin-login-form: admin_token, next
//	/credentials  table#credentials-table (tr data-name=<name>)
//	              table#token-sources-table (tr data-name=<name>; only when a token source exists)
//	              table#stores-table
//	              form#credential-form action=put: name, value (password)
//	              form.delete-form action=delete: name
//	/services     table#services-table (tr data-name=<name>)
//	              form#service-form action=put: name, host, auth_type,
//	                token, username, password, key, header, prefix,
//	                param, headers (lines "Name: template"),
//	                allow_cleartext (checkbox), allow_upgrades, and the rules:
//	                methods, paths (one a line), rate_limit, max_request_body;
//	                no_intercept (checkbox, passthrough: "intercept": false)
//	              select#auth-type; fieldset.auth[data-auth] per type
//	              templates: a.template-link data-template=<id>
//	                (href ?template=github|openai|anthropic|stripe|slack|
//	                gitlab; with JS a click fills the form in place)
//	              form#match-form action=match: url (a POST; the
//	                answer is the page itself, no redirect; the URL's
//	                query and fragment are cut off, never sent or shown)
//	              #match-result (text of the answer)
//	              form.delete-form action=delete: name
//	              ?edit=<name> fills the form with that service
//	/sessions     table#sessions-table (active: tr data-id=<id>
//	                data-state=active), table#ended-sessions-table
//	                (data-state=ended); form.revoke-form action=revoke: id
//	/agents       table#agents-table (tr data-name=<name>)
//	              form#agent-form action=create: name, services,
//	                max_session_ttl
//	              #agent-token (the token, on the answer page only)
//	              form.rotate-form action=rotate: name
//	              form.delete-form action=delete: name
//	              form.update-form action=update: name, services,
//	                max_session_ttl
//	/requests     table#requests-table (tr data-id=<id> data-status=)
//	              form.approve-form action=approve: id, grant
//	              form.deny-form action=deny: id, reason
//	/operators    table#operators-table (tr data-name=<name>)
//	              form#operator-form action=create: name, password, role
//	              form.role-form action=update: name, role
//	              form.delete-form action=delete: name
//	/audit        form#audit-filter (GET): actor, action, target, before
//	              table#audit-table, a#audit-next (older page)
//	/activity     form#activity-filter (GET): session, agent, service,
//	                host, decision, status, code, since
//	              table#activity-table, tbody#activity-rows (tr.activity-row
//	                data-id=<entry id>, the same for rows added live:
//	                new rows are prepended, de-duplicated by it; each
//	                cell td[data-field=at|session|agent|service|request|
//	                status|decision|reason|bytes|ms]),
//	              template#activity-row-template (the blank row the
//	                live view clones),
//	              p#activity-live (text "Live view: on" and
//	                data-state="on" once the stream is open;
//	                data-state="ended" when the server ends it),
//	              a#activity-next (older page)
//	/             table#stores-table, table#refusals-table,
//	              #activity-stats (activity log drops)
//	Sign-in:      /login POSTs are decided by the API's login rule
//	              (a cross-site Origin or Sec-Fetch-Site is 403); a
//	              refused sign-in answers the API's status (401, 403,
//	              429 with Retry-After) with p#flash.
//	/ca           a#ca-download (/api/v1/ca.pem), pre#launch-snippet
package webui
