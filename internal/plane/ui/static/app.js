// Warrant control panel: live updates, as progressive enhancement. Every
// page works without this script. With it, a page whose live region names
// a stream (data-stream) listens to it with Server-Sent Events and, on
// each message, fetches the page again and swaps in the new live region.
// Content always comes from the server's escaped HTML; this script never
// builds markup from data.
(function () {
  "use strict";
  document.documentElement.setAttribute("data-js", "on");

  function ago(iso) {
    var t = Date.parse(iso);
    if (isNaN(t)) return null;
    var s = (Date.now() - t) / 1000;
    if (s < 5) return "just now";
    if (s < 60) return Math.floor(s) + " s ago";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    if (s < 48 * 3600) return Math.floor(s / 3600) + " h ago";
    return Math.floor(s / 86400) + " days ago";
  }

  function refreshAges() {
    var els = document.querySelectorAll("time[data-age]");
    for (var i = 0; i < els.length; i++) {
      var text = ago(els[i].getAttribute("datetime"));
      if (text) els[i].textContent = text;
    }
  }
  setInterval(refreshAges, 15000);

  // Forms that do something hard to undo ask first (without the script
  // they submit directly; the server needs no confirmation).
  document.addEventListener("submit", function (e) {
    var msg = e.target.getAttribute && e.target.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) e.preventDefault();
  });

  var live = document.getElementById("live");
  if (!live || !window.EventSource || !window.fetch || !window.DOMParser) return;

  var source = null;
  var busy = false, again = false, last = 0;
  var MIN_GAP = 600; // ms between two refreshes

  function badge(on) {
    var b = document.querySelectorAll("[data-live-badge]");
    for (var i = 0; i < b.length; i++) b[i].hidden = !on;
    document.documentElement.setAttribute("data-live", on ? "on" : "off");
  }

  function refresh() {
    if (busy) { again = true; return; }
    var wait = last + MIN_GAP - Date.now();
    if (wait > 0) { busy = true; setTimeout(function () { busy = false; refresh(); }, wait); return; }
    busy = true; again = false; last = Date.now();
    fetch(location.href, { credentials: "same-origin", headers: { "Accept": "text/html" }, cache: "no-store" })
      .then(function (resp) {
        if (resp.redirected && resp.url.indexOf("/ui/signin") >= 0) { location.assign(resp.url); return null; }
        return resp.ok ? resp.text() : null;
      })
      .then(function (html) {
        if (!html) return;
        var doc = new DOMParser().parseFromString(html, "text/html");
        var next = doc.getElementById("live");
        if (!next) return;
        var keep = openDetails(live);
        live.replaceWith(next);
        live = next;
        restoreDetails(live, keep);
        refreshAges();
        var stream = live.getAttribute("data-stream");
        if (!stream && source) { source.close(); source = null; badge(false); }
        else if (source) badge(true);
        document.dispatchEvent(new CustomEvent("warrant:refreshed"));
      })
      .catch(function () {})
      .then(function () {
        busy = false;
        if (again) refresh();
      });
  }

  // Keep the open/closed state of diff files across refreshes.
  function openDetails(root) {
    var out = {}, d = root.querySelectorAll("details[data-key], details.file");
    for (var i = 0; i < d.length; i++) out[i] = d[i].open;
    return out;
  }
  function restoreDetails(root, keep) {
    var d = root.querySelectorAll("details[data-key], details.file");
    for (var i = 0; i < d.length; i++) if (i in keep) d[i].open = keep[i];
  }

  function connect() {
    var url = live.getAttribute("data-stream");
    if (!url) return;
    source = new EventSource(url);
    source.onopen = function () { badge(true); };
    ["event", "state", "run"].forEach(function (name) { source.addEventListener(name, refresh); });
    source.addEventListener("end", function () { source.close(); source = null; refresh(); });
    source.onerror = function () {
      badge(false);
      // A closed stream was refused (signed out, gone): reload, and the
      // server says why. Otherwise the browser reconnects by itself.
      if (source && source.readyState === EventSource.CLOSED) {
        source = null;
        setTimeout(function () { location.reload(); }, 1000);
      }
    };
  }
  connect();
})();
