// Palisade console: the little that needs script. Everything works without it.
// - Live alerts: the alerts page subscribes to the server's event stream and
//   tells the reader when alerts change.
// - Selection helpers: "select all" on the device list.
(function () {
  "use strict";
  var live = document.getElementById("live-alerts");
  if (live && window.EventSource) {
    var es = new EventSource(live.getAttribute("data-stream"));
    var count = 0;
    ["opened", "updated", "acknowledged", "resolved"].forEach(function (kind) {
      es.addEventListener(kind, function (e) {
        count += 1;
        var data = {};
        try { data = JSON.parse(e.data); } catch (err) { data = {}; }
        var summary = (data.alert && data.alert.summary) || "";
        live.textContent = count + " alert change(s) since this page loaded, latest: " +
          kind + " " + summary + " — reload to see them.";
      });
    });
  }
  var all = document.getElementById("select-all");
  if (all) {
    all.addEventListener("change", function () {
      var boxes = document.querySelectorAll("input[name=devices]");
      for (var i = 0; i < boxes.length; i++) { boxes[i].checked = all.checked; }
    });
  }
})();
