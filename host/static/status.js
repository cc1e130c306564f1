// The realm's status page: one EventSource on /api/events, "devices" when the rows change
// and "realm" every second. Every value goes into the page as text, never as HTML: the
// names and reports come from devices and admins.
"use strict";
(function () {
  var realm = null, devices = [], offset = 0;  // offset: the realm's clock minus ours, s
  var LABELS = ["Device", "State", "Link", "Last seen", "Queued", "Firmware", "App", "Board",
                "Up", "Free heap", "RSSI", "Report", "Key"];

  function $(id) { return document.getElementById(id); }
  function now() { return Date.now() / 1000 + offset; }

  function duration(s) {
    s = Math.max(0, Math.floor(s));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min";
    if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor(s % 3600 / 60) + " min";
    return Math.floor(s / 86400) + " d " + Math.floor(s % 86400 / 3600) + " h";
  }
  function ago(t) { return t == null ? "never" : duration(now() - t) + " ago"; }
  function bytes(n) {
    if (n == null) return "";
    return n >= 10240 ? (n / 1024).toFixed(1) + " KiB" : n + " B";
  }
  function text(v) { return v == null ? "" : String(v); }

  function cell(tr, label, value, cls) {
    var td = document.createElement("td");
    td.setAttribute("data-label", label);
    if (value instanceof Node) td.appendChild(value); else td.textContent = text(value);
    if (cls) td.className = cls;
    if (!td.textContent) td.classList.add("none");
    tr.appendChild(td);
    return td;
  }
  function span(cls, value) {
    var s = document.createElement("span");
    s.className = cls;
    s.textContent = text(value);
    return s;
  }

  function deviceCell(d) {
    var f = document.createDocumentFragment();
    f.appendChild(span("name", d.name || "(no name)"));
    f.appendChild(span("id", d.id));
    return f;
  }
  function stateCell(d) {
    var f = document.createDocumentFragment();
    f.appendChild(span("state " + (d.online ? "online" : "offline"), d.online ? "online" : "offline"));
    if (d.online && d.since != null) f.appendChild(span("since", "since " + ago(d.since)));
    else if (d.online) f.appendChild(span("since", "on another node"));
    return f;
  }

  function renderDevices() {
    var body = document.querySelector("#devices tbody");
    var rows = document.createDocumentFragment();
    devices.forEach(function (d) {
      var r = d.report || {}, tr = document.createElement("tr");
      tr.className = d.online ? "online" : "offline";
      tr.setAttribute("data-id", d.id);
      var up = r.up == null || d.report_at == null ? null : duration(r.up + (d.online ? now() - d.report_at : 0));
      cell(tr, LABELS[0], deviceCell(d));
      cell(tr, LABELS[1], stateCell(d), "state-cell");
      cell(tr, LABELS[2], d.online ? [d.link, d.address].filter(Boolean).join(" ") : "");
      cell(tr, LABELS[3], d.online ? "now" : ago(d.last_seen));
      cell(tr, LABELS[4], d.queued || "");
      cell(tr, LABELS[5], r.fw, "fw");
      cell(tr, LABELS[6], r.app);
      cell(tr, LABELS[7], r.board);
      cell(tr, LABELS[8], up);
      cell(tr, LABELS[9], bytes(r.heap), "heap");
      cell(tr, LABELS[10], r.rssi == null ? "" : r.rssi + " dBm");
      var age = d.report_at == null ? null : now() - d.report_at;
      cell(tr, LABELS[11], age == null ? "" : duration(age) + " old",
           age != null && age > 180 && d.online ? "stale" : "");
      cell(tr, LABELS[12], span("mono", d.fingerprint ? d.fingerprint.slice(0, 16) : "unbound"));
      rows.appendChild(tr);
    });
    body.replaceChildren(rows);
    $("empty").hidden = devices.length > 0;
  }

  function renderRealm() {
    if (!realm) return;
    document.title = realm.name + ": realm status";
    $("realm-name").textContent = realm.name;
    $("realm-version").textContent = "realm " + realm.version;
    $("online").textContent = realm.online + " of " + realm.devices;
    $("packets").textContent = realm.rates.packets_per_s;
    $("logins").textContent = realm.rates.logins_per_s;
    $("handshakes").textContent = realm.handshakes;
    $("queue").textContent = realm.queue.packets + " (" + bytes(realm.queue.bytes) + ")";
    $("uptime").textContent = duration(realm.now - realm.started);
    $("fingerprint").textContent = realm.fingerprint;
  }

  function feed(state, words) {
    var f = $("feed");
    f.className = "feed " + state;
    f.textContent = words;
  }

  function connect() {
    var source = new EventSource("/api/events");
    source.addEventListener("devices", function (e) {
      devices = JSON.parse(e.data);
      renderDevices();
    });
    source.addEventListener("realm", function (e) {
      realm = JSON.parse(e.data);
      offset = realm.now - Date.now() / 1000;
      renderRealm();
      feed("live", "live");
    });
    source.onerror = function () {
      feed("lost", "realm not answering; retrying…");
    };
  }

  // Ages move on between events too.
  setInterval(function () { if (devices.length) renderDevices(); }, 5000);
  connect();
})();
