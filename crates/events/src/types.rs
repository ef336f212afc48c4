//! Domain values shared by the events and the services, built only through parsing: once
//! you hold one it is valid.
//!
//! - [`OrderNo`]: an order's business key (RocketMQ KEYS): 1–64 printable ASCII characters,
//!   no spaces.
//! - [`ProductId`]: a product's id, a positive number; [`Quantity`]: units of one product, a
//!   positive number. In JSON maps (Java's `Map<Long, Integer>`) the id is a string key.
//! - [`Money`]: a non-negative decimal amount, written as a JSON number with its scale kept
//!   (`199.90`, not `199.9`), as Jackson writes Java's `BigDecimal`.
//!
//! Decoding an event with a value that does not parse fails, so such an event is poison and
//! dead-lettered at once instead of reaching a decision.

use std::{fmt, ops::Deref, str::FromStr};

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TypeError {
    #[error("orderNo {0:?}: must be 1-64 printable ASCII characters without spaces")]
    OrderNo(String),
    #[error("productId {0}: must be a positive id")]
    ProductId(i64),
    #[error("quantity {0}: must be at least 1")]
    Quantity(i64),
    #[error("amount {0}: must not be negative")]
    NegativeMoney(Decimal),
    #[error("amount {0:?}: not a decimal number")]
    NotMoney(String),
}

/// An order's business key, e.g. `ORD1736900000001`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OrderNo(String);

impl OrderNo {
    pub fn parse(s: impl Into<String>) -> Result<OrderNo, TypeError> {
        let s = s.into();
        let ok = (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic());
        if ok { Ok(OrderNo(s)) } else { Err(TypeError::OrderNo(s)) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for OrderNo {
    type Error = TypeError;
    fn try_from(s: String) -> Result<OrderNo, TypeError> {
        OrderNo::parse(s)
    }
}

impl From<OrderNo> for String {
    fn from(o: OrderNo) -> String {
        o.0
    }
}

impl FromStr for OrderNo {
    type Err = TypeError;
    fn from_str(s: &str) -> Result<OrderNo, TypeError> {
        OrderNo::parse(s)
    }
}

impl Deref for OrderNo {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for OrderNo {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for OrderNo {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrderNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A product's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct ProductId(i64);

impl ProductId {
    pub fn new(id: i64) -> Result<ProductId, TypeError> {
        if id > 0 { Ok(ProductId(id)) } else { Err(TypeError::ProductId(id)) }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for ProductId {
    type Error = TypeError;
    fn try_from(id: i64) -> Result<ProductId, TypeError> {
        ProductId::new(id)
    }
}

impl From<ProductId> for i64 {
    fn from(id: ProductId) -> i64 {
        id.0
    }
}

impl fmt::Display for ProductId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Units of one product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i32")]
pub struct Quantity(i32);

impl Quantity {
    pub fn new(units: i64) -> Result<Quantity, TypeError> {
        match i32::try_from(units) {
            Ok(q) if q > 0 => Ok(Quantity(q)),
            _ => Err(TypeError::Quantity(units)),
        }
    }

    pub fn get(self) -> i64 {
        i64::from(self.0)
    }
}

impl TryFrom<i64> for Quantity {
    type Error = TypeError;
    fn try_from(units: i64) -> Result<Quantity, TypeError> {
        Quantity::new(units)
    }
}

impl From<Quantity> for i32 {
    fn from(q: Quantity) -> i32 {
        q.0
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A non-negative amount of money.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money(Decimal);

impl Money {
    pub const ZERO: Money = Money(Decimal::ZERO);

    pub fn new(amount: Decimal) -> Result<Money, TypeError> {
        if amount.is_sign_negative() && !amount.is_zero() {
            Err(TypeError::NegativeMoney(amount))
        } else {
            Ok(Money(amount))
        }
    }

    pub fn amount(self) -> Decimal {
        self.0
    }
}

impl FromStr for Money {
    type Err = TypeError;
    fn from_str(s: &str) -> Result<Money, TypeError> {
        Money::new(Decimal::from_str(s.trim()).map_err(|_| TypeError::NotMoney(s.to_owned()))?)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        rust_decimal::serde::arbitrary_precision::serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Money, D::Error> {
        let amount = rust_decimal::serde::arbitrary_precision::deserialize(d)?;
        Money::new(amount).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_numbers_parse_or_say_why_not() {
        assert_eq!(OrderNo::parse("ORD1736900000001").unwrap().as_str(), "ORD1736900000001");
        for bad in ["", "ORD 1", "ORD\n1", &"X".repeat(65), "ORDé"] {
            assert!(OrderNo::parse(bad).is_err(), "{bad:?}");
        }
        let e: Result<OrderNo, _> = serde_json::from_str("\"has space\"");
        assert!(e.unwrap_err().to_string().contains("printable ASCII"));
    }

    #[test]
    fn product_quantities_keep_javas_map_json_and_refuse_non_positive_values() {
        let json = r#"{"1001":2,"1002":1}"#;
        let m: crate::ProductQuantities = serde_json::from_str(json).unwrap();
        assert_eq!(m.get(&ProductId::new(1001).unwrap()), Some(&Quantity::new(2).unwrap()));
        assert_eq!(serde_json::to_string(&m).unwrap(), json);
        for bad in [r#"{"0":1}"#, r#"{"-5":1}"#, r#"{"1001":0}"#, r#"{"1001":-1}"#, r#"{"x":1}"#] {
            assert!(serde_json::from_str::<crate::ProductQuantities>(bad).is_err(), "{bad}");
        }
        assert!(Quantity::new(i64::from(i32::MAX) + 1).is_err());
    }

    #[test]
    fn money_keeps_its_scale_and_refuses_negatives() {
        let m: Money = serde_json::from_str("199.90").unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), "199.90");
        assert!(serde_json::from_str::<Money>("-1.00").is_err());
        assert_eq!("0".parse::<Money>().unwrap(), Money::ZERO);
        assert!("ten".parse::<Money>().is_err());
    }
}
