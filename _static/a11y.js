/* Accessibility fixes to the theme's and extensions' markup, run once the
 * page has loaded (after sphinx-togglebutton has made its buttons). Each
 * fixes what axe-core (WCAG 2.1 A/AA) reported; tests/test_a11y.py runs it
 * on every page. See llmbook.book.a11y for the fixes made at build time. */
(function () {
  "use strict";

  function text(el) {
    return el ? el.textContent.replace(/\s+/g, " ").trim() : "";
  }

  // The sidebar's chevrons (<summary>) have no name: name each after its
  // chapter (axe: summary-name).
  function nameSummaries() {
    document.querySelectorAll("nav details > summary").forEach(function (s) {
      var item = s.closest("li");
      var link = item && item.querySelector(":scope > a");
      if (link && !s.hasAttribute("aria-label"))
        s.setAttribute("aria-label", "Show sections of " + text(link));
    });
  }

  // A name must contain the visible text (axe:
  // label-content-name-mismatch). The search buttons show "Search Ctrl+K":
  // their contents are the name. The colour-mode button shows only an icon
  // whose <title> ("Light") is not its name "Color mode": the icons are
  // decoration (no title, hidden from the accessibility tree). myst-nb's summaries show "Show code cell source" but are
  // labelled "Toggle hidden content": their text is the name.
  function quietIcons(button) {
    button.querySelectorAll("svg").forEach(function (svg) {
      var title = svg.querySelector("title");
      if (title) title.remove();
      svg.removeAttribute("aria-labelledby");
      svg.removeAttribute("role");
      svg.setAttribute("aria-hidden", "true");
    });
  }

  function matchNamesToText() {
    document.querySelectorAll("button.search-button-field[aria-label]")
      .forEach(function (b) { b.removeAttribute("aria-label"); });
    document.querySelectorAll(".theme-switch-button").forEach(function (b) {
      quietIcons(b);
      // Font Awesome may draw its icons after this runs: redo it then.
      new MutationObserver(function () { quietIcons(b); })
        .observe(b, { childList: true, subtree: true });
    });
    document.querySelectorAll("details.hide > summary[aria-label]")
      .forEach(function (s) { s.removeAttribute("aria-label"); });
  }

  // Every solution's button is "Toggle hidden content", and every exercise
  // is titled "Exercise": name each button after the section its exercise
  // opens, numbered where a section holds several ("Show solution to
  // Exercise 2: Exercises").
  function nameSolutionButtons() {
    document.querySelectorAll(".solution button.toggle-button")
      .forEach(function (b) {
        var title = b.closest(".admonition-title");
        var link = title && title.querySelector("a[href^='#']");
        var exercise = link && document.getElementById(
          decodeURIComponent(link.getAttribute("href").slice(1)));
        var section = exercise && exercise.closest("section");
        var heading = section && section.querySelector(
          ":scope > h1, :scope > h2, :scope > h3, :scope > h4");
        var name = "Exercise";
        if (heading) {
          var siblings = Array.prototype.filter.call(
            section.querySelectorAll(".exercise"),
            function (e) { return e.closest("section") === section; });
          if (siblings.length > 1)
            name += " " + (siblings.indexOf(exercise) + 1);
          name += ": " + text(heading).replace(/#$/, "").trim();
        }
        b.setAttribute("aria-label", "Show solution to " + name);
      });
  }

  // A link to an id inside a closed solution lands on a blank box: the
  // browser has scrolled the hidden content inside it. Open the solution
  // (sphinx-togglebutton's own toggle), undo that scroll, show the target.
  function openHashTarget() {
    var id = decodeURIComponent(location.hash.slice(1));
    var target = id && document.getElementById(id);
    var hidden = target && target.closest(".toggle-hidden");
    if (!hidden) return;
    while (hidden) {
      var button = hidden.querySelector(
        ":scope > .admonition-title > button.toggle-button");
      if (button) button.click();
      else hidden.classList.remove("toggle-hidden");
      for (var el = target; el && el !== hidden.parentElement;
           el = el.parentElement)
        el.scrollTop = 0;
      hidden = hidden.parentElement &&
        hidden.parentElement.closest(".toggle-hidden");
    }
    target.scrollIntoView();
  }

  function fixAll() {
    nameSummaries();
    matchNamesToText();
    nameSolutionButtons();
    openHashTarget();
  }

  window.addEventListener("load", fixAll);
  window.addEventListener("hashchange", openHashTarget);
})();
