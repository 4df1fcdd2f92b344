// hookwise UI: its only script. Every page works without it; with it the playground
// answers as you type (the form is posted in the background and its result swapped in).
(function () {
  "use strict";
  var form = document.getElementById("playground-form");
  var out = document.getElementById("playground-result");
  if (!form || !out || !window.fetch || !window.URLSearchParams) {
    return;
  }
  var timer = null;
  var latest = 0;

  function run() {
    var mine = ++latest;
    fetch(form.action, {
      method: "POST",
      body: new URLSearchParams(new FormData(form)),
      credentials: "same-origin",
      headers: {"X-Hookwise-Fragment": "1"}
    }).then(function (response) {
      if (!response.ok) {
        throw new Error("the server answered " + response.status + ": reload the page");
      }
      return response.text();
    }).then(function (html) {
      if (mine === latest) {
        out.innerHTML = html;  // rendered and escaped by the server
      }
    }).catch(function (error) {
      if (mine === latest) {
        out.textContent = String(error.message || error);
      }
    });
  }

  form.addEventListener("input", function () {
    window.clearTimeout(timer);
    timer = window.setTimeout(run, 350);
  });
})();
