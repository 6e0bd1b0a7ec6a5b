"""Tables as lines that read on their own: each row with its label and each value with its column's heading."""

from __future__ import annotations

import re

from services.scraper.furniture import SCREEN_READER_ONLY

# ARIA's table roles: tables built of <div>s (Wix, React design systems) read as <table>s do.
_CELL_ROLES = {"cell": "td", "gridcell": "td", "columnheader": "th", "rowheader": "th"}
_ARIA_CELLS = ", ".join(f"[role={role}]" for role in _CELL_ROLES)


# A cell that shows only an icon (a tick, a cross) says what it means to those who cannot see it: in an
# image's alt text, an SVG's aria-label or <title>, or text for screen readers only ("Included").
_ICONS = "img[alt], svg, [role=img][aria-label]"


def label_icon_cells(body) -> None:
    """Puts into each table cell the words its icons stand for, where the cell has no words of its own
    (before the page's icons and screen-reader text are dropped as furniture). Found from the icons and
    screen-reader texts, which are few, not from every cell of a page's tables."""
    for words in body.css(SCREEN_READER_ONLY):
        if _cell_of(words) is not None:
            words.unwrap()
    for icon in body.css(_ICONS):
        cell = _cell_of(icon)
        if cell is None or icon.parent is None:
            continue     # no cell's, or replaced already with the cell's other icons
        drawn = sum(len("".join(svg.text().split())) for svg in cell.css("svg"))   # an SVG's <title>
        if len("".join(cell.text().split())) > drawn:
            continue     # the cell says it in words too
        title = icon.css_first("title") if icon.tag == "svg" else None
        label = (icon.attributes.get("alt") or icon.attributes.get("aria-label")
                 or (title.text() if title is not None else "") or "").strip()
        if label:
            icon.replace_with(f" {label} ")


def _cell_of(node, depth: int = 6):
    """The table cell a node is in, a few levels up at most, or None."""
    parent = node.parent
    for _ in range(depth):
        if parent is None:
            return None
        if parent.tag in ("td", "th") or parent.attributes.get("role") in ("cell", "gridcell"):
            return parent
        parent = parent.parent
    return None


def is_table(node) -> bool:
    return node.tag == "table" or node.attributes.get("role") in ("table", "grid", "treegrid")


def _kind(cell) -> str:
    """"th" or "td", by its tag or its ARIA role."""
    return cell.tag if cell.tag in ("th", "td") else _CELL_ROLES.get(cell.attributes.get("role") or "", "")


def table_lines(table) -> list[str]:
    """Each row as a line that reads on its own (_row_text): its label (the cells up to its row
    heading, or its first cell) and each value with its column's heading; the rows of the table's
    head (or rows of headings only) give the column headings, several such rows joined per column."""
    lines: list[str] = []
    header: list[str] | None = None      # the column headings
    heading_rows: list[list] = []
    texts = {}
    grid = _grid(table)
    # Each row repeats its columns' headings: a page's few kilobytes of table can ask for gigabytes
    # (a long heading over many columns, thousands of rows of spanning cells). Past this many
    # characters, rows read as their values alone.
    budget, spent = MAX_GROWTH * len(cell_text(table)) + 10_000, 0
    for number, (tr, row) in enumerate(grid):
        for cell in row:
            if cell.mem_id not in texts:
                texts[cell.mem_id] = cell_text(cell)
        in_head = tr.parent is not None and tr.parent.tag == "thead"
        # A table written in a help centre's editor has no <th>: its first row in bold is its head.
        bold_head = number == 0 and len(grid) > 1 and header is None and all(
            _all_bold(c, texts[c.mem_id]) for c in row)
        if in_head or bold_head or (len({c.mem_id for c in row}) > 1 and all(_kind(c) == "th" for c in row)):
            heading_rows = [*heading_rows[1 - MAX_HEADING_ROWS:], row]
            header = [" ".join(dict.fromkeys(texts[r[i].mem_id] for r in heading_rows if i < len(r)
                                             and texts[r[i].mem_id])) for i in range(max(map(len, heading_rows)))]
            continue
        heading_rows = []
        if not any(texts[c.mem_id] for c in row):
            continue
        label_end = next((i for i, c in enumerate(row) if _kind(c) == "th"), 0) if any(
            _kind(c) == "td" for c in row) else 0
        label = " – ".join(dict.fromkeys(texts[c.mem_id] for c in row[:label_end + 1] if texts[c.mem_id]))
        values: list[tuple[list[str], str]] = []      # (column headings, value), a spanning cell once
        last = None
        for i in range(label_end + 1, len(row)):
            name = header[i] if header and i < len(header) else ""
            if row[i].mem_id == row[label_end].mem_id:
                continue     # a cell spanning the row is its label alone ("Rides over 3 hours cost €25.")
            if row[i].mem_id == last:
                if name and name not in values[-1][0]:
                    values[-1][0].append(name)
                continue
            last = row[i].mem_id
            values.append(([name] if name else [], texts[row[i].mem_id]))
        line = _row_text(label, values)
        if spent + len(line) > budget:
            line = "; ".join(t for t in dict.fromkeys(texts[c.mem_id] for c in row) if t)
        spent += len(line)
        lines.append(line)
    return lines


# A table's lines, their columns' headings repeated in every row, are at most this many times its
# text (and 10,000 characters); a table with 10 columns of 50-character headings over 5-character
# values reads as about 12 times its text.
MAX_GROWTH = 20
# Rows of headings in a row that head the columns together, at most (the last ones count).
MAX_HEADING_ROWS = 4


def _grid(table) -> list[tuple[object, list]]:
    """A table's rows, each (its <tr>, its cells), a cell that spans rows or columns standing in each
    place it covers (so a column's cells line up with its heading)."""
    rows, below = [], {}      # below: column -> [rows still to cover, cell] of a rowspan
    aria = table.tag != "table"
    for tr in table.css("[role=row]" if aria else "tr"):
        row: list = []
        for cell in tr.css(_ARIA_CELLS) if aria else (c for c in tr.iter() if c.tag in ("th", "td")):
            _fill(row, below)
            span, down = _span(cell, "colspan"), _span(cell, "rowspan")
            for _ in range(span):
                if down > 1:
                    below[len(row)] = [down - 1, cell]
                row.append(cell)
        _fill(row, below)
        rows.append((tr, row))
    return rows


def _fill(row: list, below: dict) -> None:
    """The cells of rows above that span down into the row's next places."""
    while len(row) in below:
        left = below[len(row)]
        row.append(left[1])
        left[0] -= 1
        if left[0] == 0:
            del below[len(row) - 1]


def _span(cell, name: str) -> int:
    value = (cell.attributes.get(name) or "1").strip()
    return min(int(value), 100) if value.isdigit() and int(value) > 0 else 1


# Bold by an inline style, as site builders' editors write it (Jimdo: <span style="font-weight: bold;">).
BOLD_STYLE = re.compile(r"font-weight\s*:\s*(?:bold(?:er)?|[6-9]00)\b", re.IGNORECASE)


def _all_bold(cell, text: str) -> bool:
    """A cell whose text is all in <strong> or <b>, or bold by its style (an empty one too, as a head's
    corner cell is)."""
    if not text:
        return True
    if BOLD_STYLE.search(cell.attributes.get("style") or ""):
        return True
    bold = " ".join(" ".join(b.text(separator=" ").split()) for b in cell.css("strong, b, [style*=font-weight]")
                    if b.tag in ("strong", "b") or BOLD_STYLE.search(b.attributes.get("style") or ""))
    return bold.replace(" ", "") == text.replace(" ", "")


# A line in bold of a block paragraphed with <br><br> is marked by the extractor (its first and last
# characters, from Unicode's private use area): it may head the lines after it. Text read other than as
# such a block's lines is read without the marks.
BOLD_LINE = ("\ue000", "\ue001")
UNMARKED = str.maketrans("", "", "".join(BOLD_LINE))


def cell_text(node) -> str:
    return " ".join(node.text(separator=" ").translate(UNMARKED).split())


def _row_text(label: str, values: list[tuple[list[str], str]]) -> str:
    """A table row as one line that reads on its own: "Weight: 34.5 kg", or with the column headings of a
    table with a head, "Weight — Trailhead Ridge: 34.5 kg; Trailhead Haul: 47.2 kg", "Germany — Minimum
    reserve: 5%" (a value that spans columns once, after all their headings: "Lite, Duo: 30-day free trial")."""
    shown = [(names, v) for names, v in values if v]
    if len(values) > 1 and any(names for names, _ in shown):
        text = "; ".join(f"{', '.join(names)}: {v}" if names else v for names, v in shown)
        return f"{label} — {text}" if label else text
    if len(values) == 1 and label and shown:
        names, value = shown[0]
        # A two-column table with a head keeps the value's heading: "Days 8-14 — Maximum per hour: 600".
        # (A value spanning several columns reads without them: the row may lack a column before it.)
        return f"{label.rstrip(':')} — {names[0]}: {value}" if len(names) == 1 else f"{label.rstrip(':')}: {value}"
    return "; ".join([label, *(v for _, v in shown)] if label else [v for _, v in shown])


# --- tables that lay out a page --------------------------------------------------------------------

PARAGRAPH_BREAK = re.compile(r"<br\s*/?>\s*(?:&nbsp;\s*)?<br\s*/?>", re.IGNORECASE)
_HEADINGS_INSIDE = "h1, h2, h3, h4, h5, h6"
MIN_MENU_LINKS = 4            # links in a layout cell, at least, for it to be a menu
MENU_LINK_SHARE = 0.6         # of a layout cell's text in links, at least, for it to be a menu


def is_layout_table(table) -> bool:
    """A <table> that lays out a page (an older site's header row, menu column, article cell and footer)
    rather than holding data: one that holds another table or a heading, or one of a single cell, or
    one whose cells are paragraphed with <br><br>; never one with <th> cells of its own. Such a table's
    cells are read as the blocks they hold, not as rows of values. (role=presentation says nothing
    here: themes put it on data tables too.)"""
    if table.tag != "table":
        return False      # ARIA tables are built for data
    if any(t.mem_id != table.mem_id for t in table.css("table")) or table.css_first(_HEADINGS_INSIDE) is not None:
        return True
    if table.css_first("th") is not None:
        return False
    cells = table.css("td")
    return len(cells) == 1 or any(PARAGRAPH_BREAK.search(cell.html or "") for cell in cells)


def drop_menu_cells(body) -> None:
    """Drops the cells of layout tables that are a menu: at least MIN_MENU_LINKS links making up at
    least MENU_LINK_SHARE of the cell's text (an older site's navigation column)."""
    for table in body.css("table"):
        if table.parent is None or not is_layout_table(table):
            continue
        for cell in table.css("td"):
            if cell.parent is None or cell.css_first("table") is not None:
                continue   # gone with a cell around it, or a cell laying out more of the page
            links = cell.css("a[href]")
            if len(links) < MIN_MENU_LINKS:
                continue
            text = len("".join(cell.text(separator=" ").split()))
            linked = sum(len("".join(a.text(separator=" ").split())) for a in links)
            if text and linked >= MENU_LINK_SHARE * text:
                cell.decompose()
