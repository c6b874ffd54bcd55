// fleet console: confirmation for every action, and in-place refresh of <main> without flicker.
// No framework, no build step; served from the fleet package so the console works offline.
(function () {
  "use strict";

  function busy() {
    var active = document.activeElement;
    return active && active !== document.body && active.closest("form") !== null;
  }

  function bindForms(root) {
    root.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) {
          event.preventDefault();
        }
      });
    });
  }

  function refresh() {
    if (document.hidden || busy()) {
      return;
    }
    var url = new URL(window.location.href);
    url.searchParams.delete("notice"); // a notice belongs to the action that set it, not to every refresh
    fetch(url.toString(), { credentials: "same-origin", headers: { "X-Console-Refresh": "1" } })
      .then(function (response) {
        if (response.redirected || !response.ok) {
          return null; // logged out or an error: leave the page as it is until the next reload
        }
        return response.text();
      })
      .then(function (html) {
        if (html === null || busy()) {
          return;
        }
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("main");
        var main = document.getElementById("main");
        if (fresh && main) {
          main.replaceChildren.apply(main, Array.from(fresh.childNodes));
          bindForms(main);
        }
      })
      .catch(function () { /* offline for a moment: try again next time */ });
  }

  document.addEventListener("DOMContentLoaded", function () {
    bindForms(document);
    var seconds = parseInt(document.body.getAttribute("data-refresh"), 10);
    if (seconds > 0) {
      window.setInterval(refresh, seconds * 1000);
    }
  });
})();
