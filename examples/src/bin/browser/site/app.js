// Ferry Gazette: shared page script.
"use strict";

(function () {
  function readCookie(name) {
    const pairs = document.cookie.split("; ");
    for (const pair of pairs) {
      const [key, value] = pair.split("=");
      if (key === name) return value;
    }
    return undefined;
  }

  // The theme is remembered across tabs: the cookie jar lives in the
  // Network process, and every tab reads the same one.
  if (readCookie("theme") === undefined) {
    document.cookie = "theme=sepia; path=/";
  }
  document.documentElement.dataset.theme = readCookie("theme");

  window.addEventListener("load", function () {
    if (readCookie("consent") === undefined) {
      document.cookie = "consent=essential-only; path=/";
    }
  });
})();
