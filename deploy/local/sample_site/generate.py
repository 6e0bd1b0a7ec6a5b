"""Writes the static pages of the sample site (Acme Cloud Drive's help centre) into site/.

`python -m deploy.local.sample_site.generate` regenerates them; the output is committed."""

from __future__ import annotations

import html
from pathlib import Path

SITE = Path(__file__).resolve().parent / "site"

HELP = [
    ("plans", "Plans and pricing", [
        ("Plans", "Acme Cloud Drive has four plans: Free, Plus, Business and Enterprise. Every plan includes web, desktop and mobile access."),
        ("Prices", "The Plus plan costs 4.99 euros per month or 49 euros per year. The Business plan costs 12 euros per user per month, billed annually.")]),
    ("free-plan", "The Free plan", [
        ("Storage", "The Free plan includes 15 GB of storage and uploads of up to 2 GB per file."),
        ("History", "Version history on the Free plan is kept for 7 days.")]),
    ("student-discount", "Student and teacher discount", [
        ("Who qualifies", "Students and teachers with a valid school email address get 50 percent off the Plus plan."),
        ("How to apply", "Open Settings > Billing > Discounts and verify your school email address.")]),
    ("reset-password", "Resetting your password", [
        ("Forgot your password", "Open the sign-in page, choose Forgot password and enter your account email."),
        ("The reset link", "The reset link we email you is valid for 30 minutes. Request a new one if it expired.")]),
    ("two-factor", "Two-factor authentication", [
        ("Turning it on", "Go to Settings > Security > Two-factor authentication and scan the QR code with an authenticator app."),
        ("Backup codes", "Keep your ten backup codes somewhere safe; each code works once if you lose your phone.")]),
    ("sharing-folders", "Sharing folders", [
        ("Invite people", "Right-click a folder, choose Share, enter an email address and pick Viewer or Editor."),
        ("Stop sharing", "Open the Share dialog again and remove the person; they lose access at once.")]),
    ("share-links", "Share links", [
        ("Public links", "A share link lets anyone with the link view a file without an account."),
        ("Expiry and passwords", "Plus and Business plans can set an expiry date and a password on every share link.")]),
    ("offline-sync", "Offline files and sync conflicts", [
        ("Working offline", "Mark a folder as Available offline in the desktop app to keep a local copy."),
        ("Conflicts", "When two people edit the same file offline, both versions are kept and the later one is saved as a conflicted copy.")]),
    ("desktop-app", "The desktop app", [
        ("Platforms", "The desktop app runs on Windows 10 or later, macOS 12 or later, and Ubuntu and Fedora Linux."),
        ("Selective sync", "Choose which folders to sync under Preferences > Sync > Selective sync.")]),
    ("mobile-app", "The mobile app", [
        ("Camera uploads", "The iOS and Android apps can upload new photos automatically over Wi-Fi."),
        ("Offline on mobile", "Star a file to keep it available offline on your phone.")]),
    ("trash", "Deleted files and the trash", [
        ("Restoring", "Deleted files stay in the trash for 30 days on Free and Plus and 180 days on Business."),
        ("Emptying the trash", "Emptying the trash removes files for good; this cannot be undone.")]),
    ("version-history", "Version history", [
        ("Older versions", "Open a file's menu and choose Version history to see and restore earlier versions."),
        ("How long", "Versions are kept for 7 days on Free, 90 days on Plus and 365 days on Business.")]),
    ("upload-limits", "Upload limits", [
        ("File size", "Single files can be up to 2 GB on Free, 50 GB on Plus and 250 GB on Business."),
        ("Resumable uploads", "Large uploads resume automatically after a network interruption.")]),
    ("data-centers", "Where your data is stored", [
        ("Regions", "Acme stores data in data centers in Frankfurt, Dublin and Virginia."),
        ("Data residency", "Enterprise customers can choose EU-only or US-only data residency.")]),
    ("encryption", "Encryption", [
        ("At rest and in transit", "Files are encrypted with AES-256 at rest and TLS 1.3 in transit."),
        ("Personal vault", "The personal vault adds client-side encryption with a separate passphrase.")]),
    ("payment-methods", "Payment methods", [
        ("Cards and wallets", "We accept Visa, Mastercard, American Express, PayPal and SEPA direct debit."),
        ("Bank transfer", "Annual Business plans can also be paid by bank transfer.")]),
    ("refunds", "Refunds", [
        ("Annual plans", "Annual plans can be refunded in full within 14 days of purchase."),
        ("Monthly plans", "Monthly plans are not refunded, but you can cancel before the next renewal.")]),
    ("cancel", "Cancelling your subscription", [
        ("How to cancel", "Cancel under Settings > Billing > Cancel plan."),
        ("After cancelling", "You keep paid features until the end of the billing period and are not charged again.")]),
    ("invoices", "Invoices and receipts", [
        ("Downloading invoices", "Every invoice is under Settings > Billing > Invoices as a PDF."),
        ("VAT", "Business customers can add a VAT number so invoices show reverse charge.")]),
    ("admin-console", "The admin console", [
        ("Managing users", "Business administrators add and remove users in the admin console."),
        ("Audit logs", "Audit logs record sign-ins, shares and deletions for 400 days.")]),
    ("single-sign-on", "Single sign-on", [
        ("SAML", "Business and Enterprise plans support single sign-on with any SAML 2.0 identity provider."),
        ("Provisioning", "SCIM provisioning creates and removes accounts from your directory automatically.")]),
    ("storage-full", "When your storage is full", [
        ("What happens", "When storage is full, syncing stops but your files stay available to view and download."),
        ("Freeing space", "Empty the trash or upgrade your plan to start syncing again.")]),
    ("account-deletion", "Deleting your account", [
        ("Closing an account", "Delete your account under Settings > Account > Delete account."),
        ("What is removed", "All files are deleted after a 30 day grace period.")]),
    ("uptime", "Service status and uptime", [
        ("Status page", "Current service status is published on the status page and by email alerts."),
        ("SLA", "Enterprise plans include a 99.95 percent uptime SLA.")]),
    ("contact-support", "Contacting support", [
        ("Hours", "Support answers by chat and email from 8am to 8pm CET, Monday to Friday."),
        ("Priority support", "Business and Enterprise customers get priority support around the clock.")]),
    ("keyboard-shortcuts", "Keyboard shortcuts", [
        ("Web app", "Press / to search, N to create a folder and Shift+U to upload files."),
        ("Desktop app", "Press Ctrl+Shift+S to pause and resume sync.")]),
]
BLOG = [
    ("introducing-vault", "Introducing the personal vault", "The personal vault keeps your most sensitive files behind client-side encryption and a separate passphrase."),
    ("faster-sync", "Sync is now twice as fast", "Block-level sync uploads only the parts of a file that changed, so large files sync twice as fast."),
    ("linux-app", "A desktop app for Linux", "The desktop app is now available for Ubuntu and Fedora Linux, with selective sync."),
    ("frankfurt-region", "A new region in Frankfurt", "Our new Frankfurt data center lets European customers keep their files in the EU."),
]


def page(title: str, body: str, extra_head: str = "") -> str:
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)} | Acme Cloud Drive Help</title>
{extra_head}</head>
<body>
<header><a href="/">Acme Cloud Drive</a> <a href="/blog/">Blog</a> <a href="/contact.html">Contact</a></header>
<nav class="sidebar"><a href="/help/plans.html">Plans</a> <a href="/help/reset-password.html">Passwords</a> <a href="/help/sharing-folders.html">Sharing</a></nav>
<main>
{body}
</main>
<footer>Copyright Acme Cloud Drive. <a href="/about.html">About us</a> <a href="/private/internal.html">Staff</a></footer>
</body>
</html>
"""


def write(path: str, text: str) -> None:
    target = SITE / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def main() -> None:
    for slug, title, sections in HELP:
        body = f"<h1>{html.escape(title)}</h1>\n" + "\n".join(
            f"<h2>{html.escape(h)}</h2>\n<p>{html.escape(t)}</p>" for h, t in sections
        )
        related = [s for s, _, _ in HELP if s != slug][:3]
        body += "\n<p>Related: " + " ".join(f'<a href="/help/{s}.html">{s}</a>' for s in related) + "</p>"
        write(f"help/{slug}.html", page(title, body, f'<link rel="canonical" href="/help/{slug}.html">\n'))
    for slug, title, text in BLOG:
        write(f"blog/{slug}.html", page(title, f"<article><h1>{html.escape(title)}</h1>\n<p>{html.escape(text)}</p></article>"))
    write("blog/index.html", page("Blog", "<h1>Blog</h1>\n<ul>\n" + "\n".join(
        f'<li><a href="/blog/{s}.html">{html.escape(t)}</a></li>' for s, t, _ in BLOG) + "\n</ul>"))
    specials = [
        ("/about.html", "About us"), ("/contact.html", "Contact"), ("/noindex.html", "Draft page"),
        ("/release-notes.txt", "Release notes"), ("/files/brochure.pdf", "Brochure (PDF)"),
        ("/slow.html", "Slow page"), ("/error.html", "Broken page"), ("/loop/a", "Loop"),
        ("/big.html", "Archive"), ("/old-pricing.html", "Old pricing"), ("/to-metadata", "Metadata"),
        ("/missing.html", "Missing page"),
    ]
    write("index.html", page("Help centre", "<h1>Acme Cloud Drive Help Centre</h1>\n<p>Answers to common questions about "
          "Acme Cloud Drive.</p>\n<ul>\n" + "\n".join(f'<li><a href="/help/{s}.html">{html.escape(t)}</a></li>'
                                                   for s, t, _ in HELP)
          + "\n</ul>\n<ul>\n" + "\n".join(f'<li><a href="{p}">{t}</a></li>' for p, t in specials)
          + '\n<li><a href="/blog/">Blog</a></li>\n</ul>'))
    write("about.html", page("About us", "<h1>About Acme</h1>\n<p>Acme Cloud Drive was founded in 2014 in Dublin "
          "and serves four million people in 120 countries.</p>"))
    write("contact.html", page("Contact", "<h1>Contact</h1>\n<p>Write to support@acme.example or use the chat in "
          "the bottom right corner. Our office is at 1 Harbour Road, Dublin.</p>"))
    write("noindex.html", page("Draft page", "<h1>Draft</h1>\n<p>This draft mentions the secret codename "
          "Bluebird, which must never be indexed.</p>", '<meta name="robots" content="noindex">\n'))
    write("private/internal.html", page("Staff only", "<h1>Staff only</h1>\n<p>The staff discount code is "
          "ORCHID-77; crawlers are told not to read this page.</p>"))
    write("release-notes.txt", "Release notes\n\nVersion 7.2 adds block-level sync for large files.\n\n"
          "Version 7.1 adds share link passwords for Plus.\n")


if __name__ == "__main__":
    main()
