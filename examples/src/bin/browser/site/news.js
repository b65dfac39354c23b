// Ferry Gazette: loads the news archive and renders the headlines.
"use strict";

fetch("/data/archive.json")
  .then((response) => response.json())
  .then((archive) => {
    const list = document.getElementById("headlines");
    for (const story of archive.stories.slice(0, 20)) {
      const item = document.createElement("li");
      item.textContent = story.headline;
      list.appendChild(item);
    }
  });
