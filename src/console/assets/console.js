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
  // the same element of a fresh copy of this page, while the tab is visible.
  function setUpRefresh() {
    document.querySelectorAll("[data-refresh][id]").forEach(function (el) {
      var every = Math.max(2, parseInt(el.dataset.refresh, 10) || 5) * 1000;
      var tick = function () {
        if (document.hidden) { setTimeout(tick, every); return; }
        fetch(window.location.href, { credentials: "same-origin" })
          .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
          .then(function (html) {
            var fresh = new DOMParser().parseFromString(html, "text/html").getElementById(el.id);
            if (fresh) { el.replaceWith(fresh); el = fresh; setUpCopy(fresh); setUpConfirm(fresh); }
          })
          .catch(function () {})
          .then(function () { setTimeout(tick, every); });
      };
      setTimeout(tick, every);
    });
  }

  // Live step logs: <pre data-log="URL"> is filled from URL?after=SEQ until the step ends.
  function setUpLogs() {
    document.querySelectorAll("pre[data-log]").forEach(function (pre) {
      var after = -1;
      var state = document.getElementById(pre.id + "-state");
      var poll = function () {
        fetch(pre.dataset.log + "?after=" + after, { credentials: "same-origin" })
          .then(function (r) {
            if (r.status >= 400 && r.status < 500) {
              if (state) state.textContent = "The log can no longer be read here (HTTP " + r.status + "); reload the page.";
              return null;
            }
            return r.ok ? r.json() : Promise.reject(r.status);
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
            if (state) state.textContent = page.complete ? "Step " + page.status + "; log complete." : "Live: step " + page.status + "…";
            if (!page.complete) setTimeout(poll, 700);
            else pre.dataset.complete = "true";
          })
          .catch(function () {
            if (state) state.textContent = "Reconnecting…";
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
