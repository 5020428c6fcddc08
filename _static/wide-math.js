/* Formulas wider than their line (inline maths on a 390 px phone, a long
 * display equation) scroll sideways in their own box instead of widening
 * the page (tests/test_phone.py). Only those become scroll boxes: every
 * other formula keeps its glyphs' small overhang visible, and a scroll box
 * is made focusable so a keyboard can scroll it (axe-core:
 * scrollable-region-focusable, tests/test_a11y.py). Rechecked when MathJax
 * has typeset the page and when the window is resized. */
(function () {
  "use strict";

  // The width of the line a formula sits in: its nearest block ancestor's
  // content box.
  function room(el) {
    var box = el.parentElement;
    while (box && getComputedStyle(box).display.indexOf("inline") === 0)
      box = box.parentElement;
    if (!box) return window.innerWidth;
    var s = getComputedStyle(box);
    return (
      box.clientWidth - parseFloat(s.paddingLeft) - parseFloat(s.paddingRight)
    );
  }

  function mark() {
    var formulas = document.querySelectorAll(
      "span.math, div.math mjx-container"
    );
    formulas.forEach(function (el) {
      el.classList.remove("math-wide");
      // the drawn glyphs, which may overhang the box by a fraction of a px
      var glyphs = el.querySelector("mjx-math");
      var need = Math.max(
        el.scrollWidth,
        glyphs ? glyphs.getBoundingClientRect().width : 0
      );
      var wide = need > room(el) + 0.5;
      el.classList.toggle("math-wide", wide);
      if (wide) {
        el.setAttribute("tabindex", "0");
        el.setAttribute("role", "region");
        el.setAttribute("aria-label", "formula, scrolls sideways");
      } else if (el.getAttribute("aria-label") === "formula, scrolls sideways") {
        el.removeAttribute("tabindex");
        el.removeAttribute("role");
        el.removeAttribute("aria-label");
      }
    });
  }

  // Rechecked after any change of a class or "open" outside the formulas
  // themselves (a solution opened, the colour mode switched), before the
  // next task: widths change when hidden content is shown.
  var pending = false;
  function schedule() {
    if (pending) return;
    pending = true;
    queueMicrotask(function () {
      pending = false;
      mark();
    });
  }
  function watch() {
    new MutationObserver(function (records) {
      for (var i = 0; i < records.length; i++) {
        var t = records[i].target;
        if (!(t.matches && t.matches("span.math, mjx-container"))) {
          schedule();
          return;
        }
      }
    }).observe(document.body, {
      attributes: true,
      subtree: true,
      attributeFilter: ["class", "open", "hidden", "style"],
    });
  }

  function start() {
    mark();
    watch();
    window.addEventListener("resize", mark);
  }

  if (document.readyState === "loading")
    document.addEventListener("DOMContentLoaded", start);
  else start();
  // By the load event MathJax's promise includes typesetting the page.
  window.addEventListener("load", function () {
    var mj = window.MathJax;
    if (mj && mj.startup && mj.startup.promise) mj.startup.promise.then(mark);
  });
})();
