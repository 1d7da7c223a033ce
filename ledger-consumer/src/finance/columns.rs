//! The columns of the FOCUS 1.2 export and each row's cells (docs/finance.md, "Columns"). Both
//! writers (CSV, Parquet) take their columns from here, so the two files always agree.

use super::focus::{decimal, month_of, start_of, Amounts, ChargeKey, NO_ORGANIZATION, UNKNOWN_PROVIDER};
use chrono::{DateTime, Utc};

/// How a column is stored: text, exact decimal money (nano-USD, 9 places), a quantity (FOCUS
/// types quantities as decimals), a count of Tollgate's own, or a UTC instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Text,
    Money,
    Quantity,
    Count,
    Time,
}

/// One cell. `Text(None)` is a null.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cell {
    Text(Option<String>),
    Money(i128),
    Quantity(u128),
    Count(u64),
    Time(DateTime<Utc>),
}

impl Cell {
    /// The cell as CSV writes it: money as an exact decimal, a quantity as a decimal (`900.0`:
    /// FOCUS types quantities as decimals, and CSV readers infer the type from the text),
    /// instants as `YYYY-MM-DDTHH:MM:SSZ`, a null as nothing.
    pub fn text(&self) -> String {
        match self {
            Cell::Text(t) => t.clone().unwrap_or_default(),
            Cell::Money(nanos) => decimal(*nanos),
            Cell::Quantity(n) => format!("{n}.0"),
            Cell::Count(n) => n.to_string(),
            Cell::Time(t) => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        }
    }
}

/// Every column, in file order.
pub const COLUMNS: [(&str, Kind); 42] = [
    ("BilledCost", Kind::Money),
    ("BillingAccountId", Kind::Text),
    ("BillingAccountName", Kind::Text),
    ("BillingAccountType", Kind::Text),
    ("BillingCurrency", Kind::Text),
    ("BillingPeriodEnd", Kind::Time),
    ("BillingPeriodStart", Kind::Time),
    ("ChargeCategory", Kind::Text),
    ("ChargeClass", Kind::Text),
    ("ChargeDescription", Kind::Text),
    ("ChargeFrequency", Kind::Text),
    ("ChargePeriodEnd", Kind::Time),
    ("ChargePeriodStart", Kind::Time),
    ("ConsumedQuantity", Kind::Quantity),
    ("ConsumedUnit", Kind::Text),
    ("ContractedCost", Kind::Money),
    ("EffectiveCost", Kind::Money),
    ("InvoiceId", Kind::Text),
    ("InvoiceIssuerName", Kind::Text),
    ("ListCost", Kind::Money),
    ("PricingCategory", Kind::Text),
    ("PricingCurrency", Kind::Text),
    ("PricingQuantity", Kind::Quantity),
    ("PricingUnit", Kind::Text),
    ("ProviderName", Kind::Text),
    ("PublisherName", Kind::Text),
    ("ServiceCategory", Kind::Text),
    ("ServiceName", Kind::Text),
    ("ServiceSubcategory", Kind::Text),
    ("SkuId", Kind::Text),
    ("SkuPriceId", Kind::Text),
    ("SubAccountId", Kind::Text),
    ("SubAccountName", Kind::Text),
    ("SubAccountType", Kind::Text),
    ("Tags", Kind::Text),
    ("x_KeyId", Kind::Text),
    ("x_KeyAlias", Kind::Text),
    ("x_UserId", Kind::Text),
    ("x_CustomerId", Kind::Text),
    ("x_Model", Kind::Text),
    ("x_TokenType", Kind::Text),
    ("x_Events", Kind::Count),
];

/// Who provides and invoices the charges: `ProviderName` and `InvoiceIssuerName` (the operator
/// of the gateway; the upstream provider is the `PublisherName`).
#[derive(Clone, Debug)]
pub struct Issuer {
    pub name: String,
}

/// The cells of one row, in the order of [`COLUMNS`].
pub fn cells(key: &ChargeKey, amounts: &Amounts, issuer: &Issuer) -> Vec<Cell> {
    let text = |s: &str| Cell::Text(Some(s.to_owned()));
    let opt = |s: &Option<String>| Cell::Text(s.clone());
    let (month_start, month_end) = month_of(key.day);
    let next_day = key.day.succ_opt().unwrap_or(key.day);
    let organization = key.organization.as_deref().unwrap_or(NO_ORGANIZATION);
    let provider = key.provider.as_deref().unwrap_or(UNKNOWN_PROVIDER);
    let unit = match key.token_type.as_str() {
        "request" => "Requests",
        "search_units" => "Search Units",
        "characters" => "Characters",
        "images" => "Images",
        "pixels" => "Pixels",
        "seconds" => "Seconds",
        _ => "Tokens",
    };
    let sku = format!("{provider}/{}/{}", key.model, key.token_type);
    let money = Cell::Money(amounts.nano_usd);
    vec![
        money.clone(),
        text(organization),
        text(organization),
        text("Organization"),
        text("USD"),
        Cell::Time(start_of(month_end)),
        Cell::Time(start_of(month_start)),
        text("Usage"),
        Cell::Text(key.correction.then(|| "Correction".to_owned())),
        text(&format!("{} {} {}", key.model, key.token_type, unit.to_lowercase())),
        text("Usage-Based"),
        Cell::Time(start_of(next_day)),
        Cell::Time(start_of(key.day)),
        Cell::Quantity(amounts.quantity),
        text(unit),
        money.clone(),
        money.clone(),
        Cell::Text(None),
        text(&issuer.name),
        money,
        text("Standard"),
        text("USD"),
        Cell::Quantity(amounts.quantity),
        text(unit),
        text(&issuer.name),
        text(provider),
        text("AI and Machine Learning"),
        text("LLM inference"),
        text("Generative AI"),
        text(&sku),
        text(&sku),
        opt(&key.team),
        opt(&key.team),
        Cell::Text(key.team.as_ref().map(|_| "Team".to_owned())),
        text(&tags(key)),
        text(&key.key_id),
        opt(&key.key_alias),
        opt(&key.user),
        opt(&key.customer),
        text(&key.model),
        text(&key.token_type),
        Cell::Count(amounts.events),
    ]
}

/// `Tags`: a JSON object of the row's tenants, keys prefixed `tollgate/` (FOCUS: provider-defined
/// tags carry the provider's prefix).
fn tags(key: &ChargeKey) -> String {
    let mut tags = serde_json::Map::new();
    for (name, value) in [("key_alias", &key.key_alias), ("customer", &key.customer), ("user", &key.user)] {
        if let Some(v) = value {
            tags.insert(format!("tollgate/{name}"), serde_json::Value::String(v.clone()));
        }
    }
    serde_json::Value::Object(tags).to_string()
}
