// The Marketplace pages, told of new entries by the event stream: the element marked
// data-watch names the event types that change what the page shows (on an image's page,
// only those about its identifier count), and the "reload" notice says how many came since
// the page was made. Only textContent is set: nothing from events becomes markup.
"use strict";

(function () {
  const live = window.stratusLive;
  const watched = document.querySelector("[data-watch]");
  const notice = document.getElementById("new-entries");
  if (!watched || !notice) return;
  const types = watched.dataset.watch.split(" ");
  const identifier = watched.dataset.identifier;
  let count = 0;

  live.subscribe((event) => {
    if (!types.includes(event.type)) return;
    if (identifier && event.object.id !== identifier) return;
    count += 1;
    notice.querySelector(".count").textContent =
      count === 1 ? "1 change to the Marketplace" : `${count} changes to the Marketplace`;
    notice.querySelector("a").href = window.location.href;
    notice.hidden = false;
  });
})();
