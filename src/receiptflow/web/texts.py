"""Every word the web page shows, in Finnish and English (pure data).

Keys name what a text is for; :func:`t` picks the language, falling back to English. Product
groups keep the catalogue's names (``dairy``, ``vegetables`` …) with a translation where one exists.
"""

from __future__ import annotations

# The version of the consent texts below ("consent_product", "consent_email"): what a consent change
# sent from the page records as the text the card holder saw. Change it whenever those texts change.
CONSENT_TEXT_VERSION = "web-2026-12"

TEXTS: dict[str, tuple[str, str]] = {  # key: (Finnish, English)
    "site": ("Omat ostotietoni", "My purchase data"),
    "skip": ("Siirry sisältöön", "Skip to content"),
    "nav": ("Sivut", "Pages"),
    "purchases": ("Ostokseni", "My purchases"),
    "mix": ("Mitä ostan", "What I buy"),
    "nutrition": ("Ravintosisältö", "Nutrition"),
    "climate": ("Ilmasto ja alkuperä", "Climate and origin"),
    "consents": ("Suostumukseni", "My consents"),
    "data": ("Tietoni", "My data"),
    "erase": ("Poista tietoni", "Erase me"),
    "sign_out": ("Kirjaudu ulos", "Sign out"),
    "language": ("Kieli", "Language"),
    "card": ("Kortti", "Card"),
    "signin_title": ("Kirjautuminen", "Sign in"),
    "signin_intro": (
        "Kirjaudu sisään kertakäyttöisellä linkillä, jonka sait.",
        "Sign in with the one-time link you were given.",
    ),
    "signin_button": ("Kirjaudu sisään", "Sign in"),
    "signin_bad": (
        "Linkki on vanhentunut, jo käytetty tai virheellinen. Pyydä uusi linkki.",
        "This link has expired, was already used or is not valid. Ask for a new link.",
    ),
    "signin_needed": ("Kirjaudu sisään nähdäksesi tietosi.", "Sign in to see your data."),
    "too_many": (
        "Liian monta kirjautumisyritystä. Odota hetki ja yritä uudelleen.",
        "Too many sign-in attempts. Wait a moment and try again.",
    ),
    "forbidden": ("Ei pääsyä", "No access"),
    "forbidden_text": (
        "Tällä kirjautumisella ei näe tätä sivua.",
        "This login cannot see this page.",
    ),
    "csrf": (
        "Lomake oli vanhentunut. Lataa sivu uudelleen ja yritä uudelleen.",
        "The form had expired. Reload the page and try again.",
    ),
    "unavailable": ("Palvelu ei juuri nyt vastaa", "The service does not answer right now"),
    "nothing_held": ("Kortistasi ei ole tallessa tietoja.", "Nothing is held about your card."),
    "nothing_held_topics": (
        "Järjestelmän tapahtumalokeissa voi vielä olla ostotapahtumiasi, kunnes niiden säilytysaika päättyy; "
        "Tietoni-sivun lataus kertoo, mihin asti. Mikään tietovarasto ei ota niitä enää vastaan.",
        "The system's event logs may still hold your purchase records until their retention ends; the "
        "download on My data says until when. No store takes them in again.",
    ),
    "not_found": ("Sivua ei ole", "No such page"),
    "visits": ("Käynnit", "Visits"),
    "spend": ("Ostot", "Spend"),
    "period": ("Ajanjakso", "Period"),
    "days": ("{n} päivää", "{n} days"),
    "lifetime": ("Yhteensä", "Lifetime"),
    "first_purchase": ("Ensimmäinen ostos", "First purchase"),
    "last_purchase": ("Viimeisin ostos", "Last purchase"),
    "points": ("Pisteet", "Points"),
    "household_points": ("Talouden pisteet", "Household points"),
    "household_members": ("Talouden kortit", "Household cards"),
    "chains": ("Ketjut", "Chains"),
    "chain": ("Ketju", "Chain"),
    "chains_unavailable": (
        "Ketjukohtaista erittelyä ei voi juuri nyt näyttää: tietovarasto ei vastaa.",
        "The breakdown by chain cannot be shown right now: the warehouse does not answer.",
    ),
    "spend_by_month": ("Ostot kuukausittain", "Spend by month"),
    "group": ("Tuoteryhmä", "Product group"),
    "share": ("Osuus", "Share"),
    "why_no_product_consent": (
        "Tuotetason tietoja ei ole, koska et ole antanut suostumusta tuotetietojen käyttöön (Suostumukseni-sivu).",
        "There are no product-level facts because you have not consented to the use of product data (see My consents).",
    ),
    "why_no_items": (
        "Tuotetason tietoja ei ole: ketjut, joissa asioit, säilyttävät vain kuittien loppusummat.",
        "There are no product-level facts: the chains you shop at keep receipt totals only.",
    ),
    "measure": ("Mittari", "Measure"),
    "basket": ("Ostoskorisi", "Your basket"),
    "recommendation": ("Suositus", "Recommendation"),
    "salt": ("Suola, g / 1000 kcal", "Salt, g per 1000 kcal"),
    "sugar": ("Sokeri, osuus energiasta", "Sugar, share of energy"),
    "vegfruit": ("Kasvikset, hedelmät ja marjat, g / 1000 kcal", "Vegetables, fruit and berries, g per 1000 kcal"),
    "salt_short": ("Suola", "Salt"),
    "sugar_short": ("Sokeri", "Sugar"),
    "vegfruit_short": ("Kasvikset ja hedelmät", "Vegetables and fruit"),
    "chart_mark": (
        "Pylväs on ostoskorisi suhteessa suositukseen; katkoviiva on suosituksen raja.",
        "Each bar is your basket relative to the recommendation; the dashed line is the recommended limit.",
    ),
    "at_most": ("enintään {v}", "at most {v}"),
    "at_least": ("vähintään {v}", "at least {v}"),
    "salt_sources": ("Mistä suola tuli", "Where the salt came from"),
    "sugar_sources": ("Mistä sokeri tuli", "Where the sugar came from"),
    "nutrition_note": (
        "Luvut kuvaavat ostoskoria, eivät sitä, mitä kukaan söi. Suositukset: Suomalaiset ravitsemussuositukset "
        "2024 aikuisille, suhteutettuna 1000 kilokaloriin.",
        "The figures describe the basket, not what anyone ate. Recommendations: Finnish nutrition "
        "recommendations 2024 for adults, per 1000 kcal.",
    ),
    "co2e_per_euro": ("Hiilijalanjälki, kg CO2e / €", "Carbon footprint, kg CO2e per €"),
    "domestic_share": ("Kotimaisten tuotteiden osuus", "Domestic share"),
    "domestic": ("Kotimaiset", "Domestic"),
    "other_origin": ("Muut tai tuntematon alkuperä", "Other or unknown origin"),
    "climate_over_time": (
        "Kehitystä ajan yli ei voi näyttää: profiili säilyttää vain kertyneet summat.",
        "No trend over time can be shown: the profile keeps running totals only.",
    ),
    "consent_product": ("Tuotetietojen käyttö markkinoinnissa", "Product data for marketing"),
    "consent_email": ("Sähköinen suoramarkkinointi", "E-mail marketing"),
    "consent_save": ("Tallenna suostumukset", "Save consents"),
    "consent_saved": ("Suostumukset tallennettu.", "Consents saved."),
    "consent_current": ("Voimassa {at} alkaen", "In force since {at}"),
    "consent_none": ("Ei tallennettua valintaa: oletus on voimassa.", "No choice recorded: the default applies."),
    "on": ("päällä", "on"),
    "off": ("pois", "off"),
    "download_intro": (
        "Lataa kaikki kortistasi tallennetut tiedot JSON-tiedostona.",
        "Download everything held about your card as a JSON file.",
    ),
    "download": ("Lataa tiedot (JSON)", "Download my data (JSON)"),
    "erase_intro": (
        "Poisto poistaa profiilisi, kuittisi ja suostumushistoriasi. Sitä ei voi perua.",
        "Erasure deletes your profile, receipts and consent history. It cannot be undone.",
    ),
    "erase_continue": ("Jatka poistoon", "Continue to erasure"),
    "erase_confirm_title": ("Vahvista poisto", "Confirm erasure"),
    "erase_confirm_label": (
        "Ymmärrän, että kaikki korttini tiedot poistetaan pysyvästi",
        "I understand that everything about my card is erased for good",
    ),
    "erase_button": ("Poista kaikki tietoni", "Erase all my data"),
    "erase_cancel": ("Peruuta", "Cancel"),
    "erase_must_confirm": ("Rastita vahvistus ennen poistoa.", "Tick the confirmation before erasing."),
    "erased": ("Tietosi on poistettu.", "Your data has been erased."),
    "erased_title": ("Kortin tiedot on poistettu", "This card has been erased"),
    "erased_text": (
        "Tämän kortin tiedot on poistettu, eikä sillä voi enää tehdä mitään tällä sivulla. "
        "Uusi kirjautuminen ei avaa sitä.",
        "This card's data has been erased: nothing more can be done with it on this page, and no new sign-in opens it.",
    ),
    "support_title": ("Tuki: kortin koko näkymä", "Support: a card's full view"),
    "support_audited": ("Tämä katselu on kirjattu lokiin ({id}).", "This look has been audited ({id})."),
    "support_card": ("Kortin numero", "Card number"),
    "support_open": ("Avaa", "Open"),
    "support_reason": ("Syy (tiketti, asiakkaan pyyntö)", "Reason (a ticket, the card holder's request)"),
    "support_reason_needed": (
        "Kerro katselun syy: se kirjataan lokiin ennen kuin mitään näytetään.",
        "Give the reason for the look: it is audited before anything is shown.",
    ),
    "chart_of": ("Kaavio: {what}", "Chart: {what}"),
    "no_days": ("Ei ostoja viimeisen vuoden ajalta.", "No purchases in the last year."),
}

GROUPS: dict[str, str] = {
    "alcohol": "alkoholi",
    "baby_products": "vauvatuotteet",
    "bread": "leipä",
    "car_care": "autonhoito",
    "clothing": "vaatteet",
    "cosmetics": "kosmetiikka",
    "dairy": "maitotuotteet",
    "drinks": "juomat",
    "dry_goods": "kuivatuotteet",
    "fish": "kala",
    "frozen": "pakasteet",
    "fruit": "hedelmät",
    "fuel": "polttoaine",
    "garden": "puutarha",
    "hardware": "rautakauppa",
    "home_goods": "kodintavarat",
    "home_textiles": "kodintekstiilit",
    "household": "kodin kulutustavarat",
    "meat": "liha",
    "personal_care": "hygienia",
    "pet_food": "lemmikkiruoka",
    "snacks": "naposteltavat",
    "vegetables": "vihannekset",
}


def t(key: str, lang: str, **values: object) -> str:
    """The text ``key`` in ``lang`` (Finnish or English), with ``{name}`` filled from ``values``."""
    fi, en = TEXTS[key]
    text = fi if lang == "fi" else en
    return text.format(**values) if values else text


def group_name(group: str, lang: str) -> str:
    """A product group's name in ``lang`` (the catalogue's name where no translation is known)."""
    return GROUPS.get(group, group) if lang == "fi" else group.replace("_", " ")
