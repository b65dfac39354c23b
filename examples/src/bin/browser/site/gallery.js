// Ferry Gazette: the gallery's lightbox.
"use strict";

document.cookie = "gallery=visited; path=/";

document.addEventListener("click", function (event) {
  const image = event.target.closest(".thumbs img");
  if (!image) return;
  document.querySelector("figure img").src = image.src;
});
