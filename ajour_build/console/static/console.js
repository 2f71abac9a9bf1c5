// Ajour console: keeps live regions fresh. The pages work without it.
//
// An element with data-live="<url>" is refreshed from that URL (a fragment of the same
// page) every few seconds, but not while a form field or button in it has the focus; it
// stops when the fragment holds [data-live-final]. The build log (#build-log) follows
// /api/v1/builds/<id>/log-lines while the build is active.
"use strict";

(() => {
  const interval = Number(document.body.dataset.poll) || 2000;
  const ACTIVE = new Set(["queued", "running"]);
  const FIELDS = "input, select, textarea, button";

  // a half-typed reason or a button about to be pressed is not swapped away
  const inUse = (region) => {
    const focused = document.activeElement;
    return focused !== null && region.contains(focused) && focused.matches(FIELDS);
  };

  const get = (url, accept) =>
    fetch(url, {
      credentials: "same-origin",
      cache: "no-store",
      headers: { Accept: accept, "X-Requested-With": "ajour-console" },
    });

  function live(region) {
    const url = region.dataset.live;
    let last = null;
    let stopped = false;

    const tick = async () => {
      if (document.hidden) {
        setTimeout(tick, interval);
        return;
      }
      try {
        const response = await get(url, "text/html");
        if (!response.ok) {
          region.dataset.liveState = `stopped (HTTP ${response.status})`;
          stopped = response.status === 401 || response.status === 404;
        } else {
          const html = await response.text();
          if (html !== last && !inUse(region)) {
            region.innerHTML = html;
            last = html;
          }
          region.dataset.liveState = "ok";
          stopped = region.querySelector("[data-live-final]") !== null;
        }
      } catch {
        region.dataset.liveState = "offline";
      }
      if (!stopped) setTimeout(tick, interval);
    };
    setTimeout(tick, interval);
  }

  function follow(log) {
    let next = Number(log.dataset.next) || 0;
    const base = log.dataset.logUrl;

    const tick = async () => {
      let again = true;
      try {
        const response = await get(`${base}?after=${next}`, "application/json");
        if (!response.ok) {
          log.dataset.following = `stopped (HTTP ${response.status})`;
          return;
        }
        const page = await response.json();
        if (page.lines.length > 0) {
          const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
          log.append(document.createTextNode(page.lines.map((line) => `${line}\n`).join("")));
          if (atEnd) log.scrollTop = log.scrollHeight;
          next = page.next;
        }
        again = ACTIVE.has(page.state) || page.lines.length > 0;
        log.dataset.following = again ? "yes" : "done";
      } catch {
        log.dataset.following = "offline";
      }
      if (again) setTimeout(tick, 1000);
    };
    tick();
  }

  document.querySelectorAll("[data-live]").forEach(live);
  const log = document.getElementById("build-log");
  if (log && log.dataset.active === "true") follow(log);
})();
