// Simple-Registry web UI: theme, copy, keyboard navigation, and the action buttons.
// No framework, no build step. Text from the server is only ever set with textContent.
(function () {
  "use strict";

  var THEME_KEY = "simple-registry-theme";
  var REFRESH_KEY = "simple-registry-autorefresh";

  // The stored theme, before the first paint (this script is loaded in <head>).
  function storedTheme() {
    try { return localStorage.getItem(THEME_KEY); } catch (e) { return null; }
  }
  var theme = storedTheme();
  if (theme === "dark" || theme === "light") {
    document.documentElement.setAttribute("data-theme", theme);
  }

  function currentTheme() {
    var set = document.documentElement.getAttribute("data-theme");
    if (set) return set;
    return window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  }

  function toggleTheme() {
    var next = currentTheme() === "dark" ? "light" : "dark";
    document.documentElement.setAttribute("data-theme", next);
    try { localStorage.setItem(THEME_KEY, next); } catch (e) { /* private mode */ }
    var button = document.querySelector("[data-theme-toggle]");
    if (button) button.setAttribute("aria-pressed", String(next === "dark"));
  }

  var toastTimer = null;
  function toast(text, bad) {
    var box = document.querySelector("[data-toast]");
    if (!box) return;
    box.textContent = text;
    box.className = "toast show" + (bad ? " bad" : "");
    clearTimeout(toastTimer);
    toastTimer = setTimeout(function () { box.className = "toast"; }, bad ? 8000 : 3500);
  }

  // navigator.clipboard needs a secure context (https or localhost); else execCommand.
  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    return new Promise(function (resolve, reject) {
      var area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.className = "visually-hidden";
      document.body.appendChild(area);
      area.select();
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      document.body.removeChild(area);
      if (ok) { resolve(); } else { reject(new Error("copy refused")); }
    });
  }

  // The message of an OCI error body, or the status line.
  function errorText(response) {
    return response.text().then(function (body) {
      try {
        var parsed = JSON.parse(body);
        if (parsed && parsed.errors && parsed.errors.length) {
          var first = parsed.errors[0];
          return response.status + " " + (first.code || "") + ": " + (first.message || "");
        }
      } catch (e) { /* not JSON */ }
      return response.status + " " + response.statusText;
    });
  }

  function send(method, url) {
    return fetch(url, {
      method: method,
      credentials: "same-origin",
      headers: { "Accept": "application/json" },
      cache: "no-store"
    });
  }

  function humanBytes(size) {
    var units = ["B", "KiB", "MiB", "GiB", "TiB"];
    var value = size;
    for (var i = 0; i < units.length; i++) {
      if (value < 1024 || i === units.length - 1) {
        return (i === 0 ? value.toFixed(0) : value.toFixed(1)) + " " + units[i];
      }
      value /= 1024;
    }
    return String(size);
  }

  function setResult(element, text, good) {
    if (!element) return;
    element.textContent = text;
    element.className = "result " + (good ? "good" : "bad");
  }

  function warm(form) {
    var nameField = form.querySelector("[name=name]");
    var name = (nameField ? nameField.value : form.getAttribute("data-name") || "").trim();
    var tag = (form.querySelector("[name=tag]").value || "").trim();
    var platformsField = form.querySelector("[name=platforms]");
    var platforms = platformsField ? platformsField.value.replace(/\s+/g, "") : "";
    var prefix = form.getAttribute("data-prefix") || "";
    var result = form.querySelector("[data-result]");
    if (!name || !tag) {
      setResult(result, "Name an image and a tag.", false);
      return;
    }
    if (prefix && name.indexOf(prefix + "/") !== 0) name = prefix + "/" + name;
    var url = "/v2/" + name.split("/").map(encodeURIComponent).join("/") +
      "/_angos/warm/" + encodeURIComponent(tag);
    if (platforms) url += "?platform=" + encodeURIComponent(platforms);
    var button = form.querySelector("button[type=submit]");
    if (button) button.disabled = true;
    setResult(result, "Warming " + name + ":" + tag + "…", true);
    send("POST", url).then(function (response) {
      if (!response.ok) {
        return errorText(response).then(function (text) { setResult(result, "Warm failed: " + text, false); });
      }
      return response.json().then(function (report) {
        var text = "Warmed " + report.name + ":" + report.tag + " (" + report.digest.slice(0, 19) + "): " +
          report.manifests.length + " manifest(s), " + report.blobs_fetched + " blob(s) fetched (" +
          humanBytes(report.bytes_fetched) + "), " + report.blobs_cached + " already cached.";
        if (report.skipped_platforms.length) text += " Skipped: " + report.skipped_platforms.join(", ") + ".";
        setResult(result, text, true);
        form.setAttribute("data-warmed", report.digest);
      });
    }).catch(function (error) {
      setResult(result, "Warm failed: " + error.message, false);
    }).then(function () {
      if (button) button.disabled = false;
    });
  }

  function del(button) {
    var question = button.getAttribute("data-confirm") || "Delete from the cache?";
    if (!window.confirm(question)) return;
    button.disabled = true;
    send("DELETE", button.getAttribute("data-delete")).then(function (response) {
      if (response.ok) {
        toast("Deleted.", false);
        window.location.assign(button.getAttribute("data-after") || "/");
        return;
      }
      return errorText(response).then(function (text) { toast("Delete failed: " + text, true); });
    }).catch(function (error) {
      toast("Delete failed: " + error.message, true);
    }).then(function () { button.disabled = false; });
  }

  function retry(button) {
    button.disabled = true;
    send("POST", button.getAttribute("data-retry")).then(function (response) {
      if (response.ok) {
        var row = button.closest("tr");
        if (row) row.parentNode.removeChild(row);
        toast("The job is queued again.", false);
        return;
      }
      return errorText(response).then(function (text) { toast("Retry failed: " + text, true); });
    }).catch(function (error) {
      toast("Retry failed: " + error.message, true);
    }).then(function () { button.disabled = false; });
  }

  // -- keyboard ------------------------------------------------------------------------
  // j/k: next/previous row, Enter follows its link (native); / : the filter;
  // g h: repositories, g c: cache status; t: theme; ?: this help.
  var rowIndex = -1;
  var pendingG = false;

  function rows() {
    return Array.prototype.slice.call(document.querySelectorAll("[data-row]"));
  }

  function moveRow(step) {
    var all = rows();
    if (!all.length) return;
    if (rowIndex >= 0 && all[rowIndex]) all[rowIndex].classList.remove("current");
    rowIndex = Math.max(0, Math.min(all.length - 1, rowIndex + step));
    var row = all[rowIndex];
    row.classList.add("current");
    var link = row.querySelector("a[href]");
    (link || row).focus();
    row.scrollIntoView({ block: "nearest" });
  }

  function typing(target) {
    var tag = target && target.tagName;
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || (target && target.isContentEditable);
  }

  function onKey(event) {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    var help = document.getElementById("help");
    if (pendingG) {
      pendingG = false;
      if (event.key === "h") { window.location.assign("/"); return; }
      if (event.key === "c") { window.location.assign("/_cache"); return; }
    }
    switch (event.key) {
      case "j": moveRow(1); event.preventDefault(); break;
      case "k": moveRow(-1); event.preventDefault(); break;
      case "/": {
        var filter = document.querySelector("[data-filter]");
        if (filter) { filter.focus(); filter.select(); event.preventDefault(); }
        break;
      }
      case "g": pendingG = true; break;
      case "t": toggleTheme(); break;
      case "?":
        if (help && help.showModal) { help.showModal(); event.preventDefault(); }
        break;
      default: break;
    }
  }

  function setupAutorefresh() {
    var box = document.querySelector("[data-autorefresh]");
    if (!box) return;
    var seconds = parseInt(box.getAttribute("data-autorefresh"), 10) || 15;
    var timer = null;
    function apply() {
      clearInterval(timer);
      if (box.checked) timer = setInterval(function () { window.location.reload(); }, seconds * 1000);
    }
    try { box.checked = localStorage.getItem(REFRESH_KEY) === "1"; } catch (e) { /* ignore */ }
    box.addEventListener("change", function () {
      try { localStorage.setItem(REFRESH_KEY, box.checked ? "1" : "0"); } catch (e) { /* ignore */ }
      apply();
    });
    apply();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var toggle = document.querySelector("[data-theme-toggle]");
    if (toggle) {
      toggle.setAttribute("aria-pressed", String(currentTheme() === "dark"));
      toggle.addEventListener("click", toggleTheme);
    }
    document.addEventListener("click", function (event) {
      var target = event.target.closest("button");
      if (!target) return;
      if (target.hasAttribute("data-copy")) {
        var text = target.getAttribute("data-copy");
        copyText(text).then(function () {
          target.classList.add("copied");
          toast("Copied " + text, false);
          setTimeout(function () { target.classList.remove("copied"); }, 1500);
        }, function () { toast("Could not copy: select it and copy by hand.", true); });
      } else if (target.hasAttribute("data-delete")) {
        del(target);
      } else if (target.hasAttribute("data-retry")) {
        retry(target);
      } else if (target.hasAttribute("data-close")) {
        var dialog = target.closest("dialog");
        if (dialog) dialog.close();
      }
    });
    Array.prototype.forEach.call(document.querySelectorAll("form[data-warm]"), function (form) {
      form.addEventListener("submit", function (event) { event.preventDefault(); warm(form); });
    });
    document.addEventListener("keydown", onKey);
    setupAutorefresh();
  });
})();
