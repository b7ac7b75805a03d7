// agent-vault web UI: small enhancements only; every page works
// without it. DOM is built with textContent, never innerHTML.
"use strict";

(function () {
  function $(sel, root) { return (root || document).querySelector(sel); }
  function $all(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }

  // Services: show the fields of the chosen auth type only.
  function authFields() {
    var sel = $("#auth-type");
    if (!sel) return;
    function show() {
      $all("fieldset.auth").forEach(function (fs) {
        var types = (fs.getAttribute("data-auth") || "").split(" ");
        fs.hidden = types.indexOf(sel.value) < 0;
      });
    }
    sel.addEventListener("change", show);
    show();
  }

  // Services: a template link fills the form in place.
  function templates() {
    var form = $("#service-form");
    if (!form) return;
    var list = null;
    fetch("/static/service-templates.json").then(function (r) { return r.json(); }).then(function (l) { list = l; });
    $all("a.template-link").forEach(function (a) {
      a.addEventListener("click", function (ev) {
        if (!list) return; // fall back to the link (?template=)
        var id = a.getAttribute("data-template");
        var t = list.filter(function (x) { return x.id === id; })[0];
        if (!t) return;
        ev.preventDefault();
        var s = t.service, auth = s.auth || {};
        ["token", "username", "password", "key", "header", "prefix", "param", "headers", "allow_upgrades"].forEach(function (n) {
          if (form.elements[n]) form.elements[n].value = "";
        });
        form.elements.name.value = s.name || "";
        form.elements.host.value = s.host || "";
        form.elements.auth_type.value = auth.type || "bearer";
        ["token", "username", "password", "key", "header", "prefix", "param"].forEach(function (n) {
          if (auth[n] && form.elements[n]) form.elements[n].value = auth[n];
        });
        form.elements.auth_type.dispatchEvent(new Event("change"));
      });
    });
  }

  // Copy buttons.
  function copies() {
    $all("button.copy").forEach(function (b) {
      b.addEventListener("click", function () {
        var el = document.getElementById(b.getAttribute("data-copy"));
        if (el && navigator.clipboard) navigator.clipboard.writeText(el.textContent.trim());
      });
    });
  }

  // Activity: new entries appear at the top of the table as they come.
  function live() {
    var status = $("#activity-live"), rows = $("#activity-rows");
    if (!status || !rows || !window.EventSource) return;
    var q = status.getAttribute("data-query") || "", after = status.getAttribute("data-after");
    // From the newest row listed (first page only): nothing between the list and the stream is lost.
    if (after && !/[?&]before=/.test(location.search)) q += (q ? "&" : "") + "after=" + encodeURIComponent(after);
    var seen = {};
    $all("tr.activity-row", rows).forEach(function (tr) { seen[tr.getAttribute("data-id")] = true; });
    var tmpl = $("#activity-row-template");
    if (!tmpl) return;
    var es = new EventSource("/api/v1/activity/stream" + (q ? "?" + q : ""));
    status.textContent = "Live view: connecting…";
    es.onopen = function () { status.textContent = "Live view: on"; status.setAttribute("data-state", "on"); };
    es.onerror = function () { status.textContent = "Live view: reconnecting…"; status.setAttribute("data-state", "error"); };
    // The server ends the stream (the login ended): stop, or the
    // browser would reconnect for ever.
    es.addEventListener("end", function (ev) {
      es.close();
      var why = "";
      try { why = JSON.parse(ev.data).reason || ""; } catch (err) { /* none */ }
      status.textContent = "Live view: ended" + (why ? " (" + why + ")" : "") + "; reload the page";
      status.setAttribute("data-state", "ended");
    });
    es.addEventListener("activity", function (ev) {
      var e;
      try { e = JSON.parse(ev.data); } catch (err) { return; }
      var id = e.id || ev.lastEventId;
      if (seen[id]) return;
      seen[id] = true;
      // The server's own row (template#activity-row-template), filled
      // cell by cell: the layout is defined once, in activity.html.
      var tr = tmpl.content.firstElementChild.cloneNode(true);
      tr.className = "activity-row " + (e.decision || "");
      tr.setAttribute("data-id", id);
      var text = {
        at: e.at ? new Date(e.at).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z") : "",
        session: e.session, agent: e.agent, service: e.service,
        request: (e.method || "") + " " + (e.host || "") + ":" + (e.port || "") + (e.path || ""),
        status: String(e.status || ""), decision: (e.decision || "") + (e.code ? " (" + e.code + ")" : ""), reason: e.reason,
        bytes: (e.bytes_in || 0) + " / " + (e.bytes_out || 0), ms: (e.duration_ms || 0).toFixed(1)
      };
      $all("td[data-field]", tr).forEach(function (td) {
        var v = text[td.getAttribute("data-field")];
        td.textContent = v == null ? "" : String(v);
      });
      rows.insertBefore(tr, rows.firstChild);
      while (rows.children.length > 500) rows.removeChild(rows.lastChild);
    });
  }

  document.addEventListener("DOMContentLoaded", function () { authFields(); templates(); copies(); live(); });
})();
