// The console's own script (no library, no inline script: the CSP allows only this file).
// It shows times in the agent's time zone (UTC stays on hover), groups the journey by the
// agent's days, marks where the anonymous part of a journey meets the known part, and
// loads older pages in place through the same cursor links that work without it; it keeps
// the customer page and the home's "Active now" list live.
"use strict";

(function () {
  var dayLabel = new Intl.DateTimeFormat(undefined, {
    weekday: "long", year: "numeric", month: "long", day: "numeric"
  });
  var clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  var full = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
  var zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function dayKey(date) {
    return date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate());
  }

  function utcText(date) {
    return date.toISOString().replace("T", " ").replace(/\.\d+Z$/, "").replace("Z", "") + " UTC";
  }

  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (node) {
      if (node.dataset.local) { return; }
      var date = new Date(node.getAttribute("datetime"));
      if (isNaN(date.getTime())) { return; }
      // An item's own time sits under its day's heading: the clock is enough there.
      var underDay = node.closest("li.event span.time") !== null;
      if (node.dataset.relative === "1") {
        // "3 hours ago" stays; the instant, in the agent's zone, is on hover.
        node.title = full.format(date) + " (" + zone + "), " + utcText(date);
      } else {
        node.textContent = underDay ? clock.format(date) : full.format(date);
        node.title = utcText(date) + " (shown in " + zone + ")";
      }
      node.dataset.local = "1";
    });
  }

  function decorate(list) {
    list.querySelectorAll("li.day, li.journey-note").forEach(function (node) { node.remove(); });
    var events = list.querySelectorAll("li.event");
    var lastDay = null;
    events.forEach(function (item, index) {
      var date = new Date(item.dataset.time);
      var key = dayKey(date);
      if (key !== lastDay) {
        var heading = document.createElement("li");
        heading.className = "day";
        var title = document.createElement("h3");
        title.textContent = dayLabel.format(date);
        heading.appendChild(title);
        item.parentNode.insertBefore(heading, item);
        lastDay = key;
      }
      var older = events[index + 1];
      if (item.dataset.known === "1" && older && older.dataset.known === "0") {
        var note = document.createElement("li");
        note.className = "journey-note";
        note.textContent = list.dataset.anonymousNote + " (" + (older.querySelector(".who") || {}).textContent + ")";
        item.parentNode.insertBefore(note, item.nextSibling);
      }
    });
  }

  function loadOlder(event) {
    var link = event.target.closest("a#older");
    if (!link) { return; }
    event.preventDefault();
    if (link.dataset.loading) { return; }
    link.dataset.loading = "1";
    link.textContent = "Loading…";
    fetch(link.dataset.fragment, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (response.status === 401) {
          window.location.assign(response.headers.get("X-Console-Sign-In") || "/console/sign-in");
          return null;
        }
        if (!response.ok) { throw new Error("status " + response.status); }
        return response.text();
      })
      .then(function (html) {
        if (html === null) { return; }
        var page = new DOMParser().parseFromString(html, "text/html");
        var list = document.getElementById("timeline");
        list.querySelectorAll("li.empty").forEach(function (node) { node.remove(); });
        page.querySelectorAll("ol.timeline > li.event").forEach(function (item) {
          list.appendChild(document.importNode(item, true));
        });
        var end = document.getElementById("timeline-end");
        var nav = page.querySelector("nav.paging");
        end.replaceChildren.apply(end, Array.prototype.map.call(nav.childNodes, function (node) {
          return document.importNode(node, true);
        }));
        localTimes(list);
        decorate(list);
      })
      .catch(function () {
        link.textContent = "Could not load older events; click to try again";
        delete link.dataset.loading;
      });
  }

  // The page, live: the customer's stream (app/console/live.py) says when new events are
  // on the timeline; the page is then fetched again and what changed put in place (the
  // new items on top, the profile and its presence line), drawn by the one template.
  function live(list) {
    if (!list.dataset.live || !window.EventSource) { return; }
    var source = new EventSource(list.dataset.live);
    var pending = null;
    source.addEventListener("open", function () { list.dataset.liveState = "open"; });
    source.addEventListener("error", function () { list.dataset.liveState = closedOr(source); });
    source.addEventListener("end", function (event) {
      source.close();
      signedOut(event);
    });
    source.addEventListener("item", function () {
      if (pending === null) { pending = window.setTimeout(refresh, 100); }
    });
    function refresh() {
      pending = null;
      fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (response) { return response.ok ? response.text() : null; })
        .then(function (html) {
          if (html === null) { return; }
          var page = new DOMParser().parseFromString(html, "text/html");
          var profile = page.getElementById("profile");
          if (profile) {
            document.getElementById("profile").replaceWith(document.importNode(profile, true));
            localTimes(document.getElementById("profile"));
          }
          var shown = {};
          list.querySelectorAll("li.event").forEach(function (item) { shown[item.dataset.id] = true; });
          var fresh = Array.prototype.filter.call(page.querySelectorAll("ol.timeline > li.event"), function (item) {
            return !shown[item.dataset.id];
          });
          if (!fresh.length) { return; }
          list.querySelectorAll("li.empty").forEach(function (node) { node.remove(); });
          var first = list.querySelector("li.event");
          fresh.forEach(function (item) {
            var node = document.importNode(item, true);
            node.classList.add("fresh");
            list.insertBefore(node, first);
          });
          localTimes(list);
          decorate(list);
          list.dataset.liveItems = String((Number(list.dataset.liveItems) || 0) + fresh.length);
        })
        .catch(function () {
          // The server went away mid-fetch (a restart): fetch again in a second, or the
          // news of this stream's items would wait for the next one.
          if (pending === null) { pending = window.setTimeout(refresh, 1000); }
        });
    }
  }

  // A stream's "end" (the session ended, the key revoked): where its data says to sign in
  // (a session the server ended already), else the page itself again, which the server
  // answers with sign-in, the reason, and a way back here after.
  function signedOut(event) {
    var sign_in = null;
    try { sign_in = JSON.parse(event.data).sign_in || null; } catch (ignored) { sign_in = null; }
    window.location.assign(sign_in || window.location.href);
  }

  // An EventSource that will not reconnect (an answer other than a stream) says so on
  // the page's data-live-state, for the agent to reload.
  function closedOr(source) { return source.readyState === EventSource.CLOSED ? "closed" : "reconnecting"; }

  // The home's "Active now" list, live: the team's stream (app/console/live.py, `news` at
  // most once a second) says a customer had new events; the list is fetched again
  // (/console/active-now), at most once a second, and once a minute anyway, so that
  // customers drop off when their newest event passes five minutes and "ago" moves on.
  function activeNow(section) {
    if (!section.dataset.fragment) { return; }
    var last = 0;
    var timer = null;
    function soon() {
      if (timer !== null) { return; }
      timer = window.setTimeout(refresh, Math.max(0, last + 1000 - Date.now()));
    }
    function refresh() {
      timer = null;
      last = Date.now();
      fetch(section.dataset.fragment, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (response) {
          if (response.status === 401) {
            window.location.assign(response.headers.get("X-Console-Sign-In") || window.location.href);
            return null;
          }
          return response.ok ? response.text() : null;
        })
        .then(function (html) {
          if (html === null) { return; }
          var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("active-customers");
          if (!fresh) { return; }
          section.replaceChildren.apply(section, Array.prototype.map.call(fresh.childNodes, function (node) {
            return document.importNode(node, true);
          }));
          localTimes(section);
          section.dataset.refreshes = String((Number(section.dataset.refreshes) || 0) + 1);
        })
        .catch(function () { section.dataset.liveState = "stale"; });
    }
    window.setInterval(soon, 60000);
    if (!section.dataset.live || !window.EventSource) { return; }
    var source = new EventSource(section.dataset.live);
    var opened = false;
    source.addEventListener("open", function () {
      section.dataset.liveState = "open";
      if (opened) { soon(); }  // back after a break: what changed meanwhile
      opened = true;
    });
    source.addEventListener("error", function () { section.dataset.liveState = closedOr(source); });
    source.addEventListener("news", soon);
    source.addEventListener("end", function (event) {
      source.close();
      signedOut(event);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    var list = document.getElementById("timeline");
    if (list) { decorate(list); live(list); }
    var active = document.getElementById("active-customers");
    if (active) { activeNow(active); }
    document.addEventListener("click", loadOlder);
    document.body.dataset.ready = "1";
  });
})();
