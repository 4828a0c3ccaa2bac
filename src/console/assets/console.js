// triggerd console: small progressive enhancements. Every page works without this script.
"use strict";

(function () {
  // Copy buttons: <button data-copy="ID"> copies the value of the element with that id.
  function setUpCopy(root) {
    root.querySelectorAll("button[data-copy]").forEach(function (button) {
      button.hidden = false;
      button.addEventListener("click", function () {
        var source = document.getElementById(button.dataset.copy);
        if (!source) return;
        var text = source.value !== undefined ? source.value : source.textContent;
        var done = function () {
          button.textContent = "Copied";
          setTimeout(function () { button.textContent = "Copy"; }, 1500);
        };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(text).then(done, function () {
            source.select(); document.execCommand("copy"); done();
          });
        } else {
          source.select(); document.execCommand("copy"); done();
        }
      });
    });
  }

  // Confirmation for destructive forms: <form data-confirm="question">.
  function setUpConfirm(root) {
    root.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.dataset.confirm)) event.preventDefault();
      });
    });
  }

  // Lists kept up to date: an element with data-refresh="SECONDS" and an id is replaced by
  // the same element of a fresh copy of this page, while the tab is visible. It stops when the
  // fresh element no longer asks to be refreshed (the execution ended), or when the page cannot
  // be read again (the session ended, or the page answered a form post).
  function setUpRefresh() {
    document.querySelectorAll("[data-refresh][id]").forEach(function (el) {
      var every = Math.max(2, parseInt(el.dataset.refresh, 10) || 5) * 1000;
      var tick = function () {
        if (document.hidden) { setTimeout(tick, every); return; }
        fetch(window.location.href, { credentials: "same-origin", redirect: "manual" })
          .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
          .then(function (html) {
            var fresh = new DOMParser().parseFromString(html, "text/html").getElementById(el.id);
            if (!fresh) return;
            el.replaceWith(fresh); el = fresh; setUpCopy(fresh); setUpConfirm(fresh);
            if (fresh.hasAttribute("data-refresh")) setTimeout(tick, every);
          })
          .catch(function (status) {
            if (typeof status === "number" && status >= 500) setTimeout(tick, every * 2);
          });
      };
      setTimeout(tick, every);
    });
  }

  // Live step logs: <pre data-log="URL"> is filled from URL?after=SEQ until the step ends.
  // Polling pauses while the tab is hidden, and stops when the log can no longer be read.
  function setUpLogs() {
    document.querySelectorAll("pre[data-log]").forEach(function (pre) {
      var after = -1;
      var state = document.getElementById(pre.id + "-state");
      var say = function (text) { if (state) state.textContent = text; };
      var poll = function () {
        if (document.hidden) { setTimeout(poll, 1000); return; }
        fetch(pre.dataset.log + "?after=" + after, { credentials: "same-origin", redirect: "manual" })
          .then(function (r) {
            var json = (r.headers.get("content-type") || "").indexOf("application/json") === 0;
            if (r.ok && json) return r.json();
            if (r.status >= 500) return Promise.reject(r.status);
            say("The log can no longer be read here (your session may have ended); reload the page.");
            return null;
          })
          .then(function (page) {
            if (!page) return;
            if (after < 0 && page.lines.length) pre.textContent = "";
            page.lines.forEach(function (line) {
              var span = document.createElement("span");
              span.className = "line " + line.stream;
              span.title = new Date(line.ts).toISOString() + " " + line.stream;
              span.textContent = line.text + "\n";
              pre.appendChild(span);
            });
            after = page.next;
            if (page.lines.length) pre.scrollTop = pre.scrollHeight;
            say(page.complete ? "Step " + page.status + "; log complete." : "Live: step " + page.status + "…");
            if (!page.complete) setTimeout(poll, 700);
            else pre.dataset.complete = "true";
          })
          .catch(function () {
            say("Reconnecting…");
            setTimeout(poll, 2000);
          });
      };
      poll();
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    setUpCopy(document);
    setUpConfirm(document);
    setUpRefresh();
    setUpLogs();
  });
})();
