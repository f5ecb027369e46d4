//! Domain enums as stored text: each reads and writes its wire spelling on both backends, so
//! row structs carry the enum and a value that is not one of its spellings is a read error
//! rather than a string that later code must re-parse.

use diesel::backend::Backend;
use diesel::deserialize::{self, FromSql};
use diesel::pg::Pg;
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sql_types::Text;
use diesel::sqlite::Sqlite;

use super::MultiBackend;

/// Implements `AsExpression<Text>`, `ToSql`/`FromSql` for both backends and the multi-backend
/// connection, and `Queryable`, through the type's `as_str` and `parse`.
macro_rules! stored_text {
    ($($ty:ty),+ $(,)?) => {$(
        impl ToSql<Text, Pg> for $ty {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
                <str as ToSql<Text, Pg>>::to_sql(self.as_str(), &mut out.reborrow())
            }
        }

        impl ToSql<Text, Sqlite> for $ty {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
                out.set_value(self.as_str());
                Ok(IsNull::No)
            }
        }

        impl ToSql<Text, MultiBackend> for $ty {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, MultiBackend>) -> serialize::Result {
                out.set_value((Text, self));
                Ok(IsNull::No)
            }
        }

        impl FromSql<Text, Pg> for $ty {
            fn from_sql(bytes: <Pg as Backend>::RawValue<'_>) -> deserialize::Result<Self> {
                let text = <String as FromSql<Text, Pg>>::from_sql(bytes)?;
                parse_stored(&text, stringify!($ty), <$ty>::parse)
            }
        }

        impl FromSql<Text, Sqlite> for $ty {
            fn from_sql(bytes: <Sqlite as Backend>::RawValue<'_>) -> deserialize::Result<Self> {
                let text = <String as FromSql<Text, Sqlite>>::from_sql(bytes)?;
                parse_stored(&text, stringify!($ty), <$ty>::parse)
            }
        }

        impl FromSql<Text, MultiBackend> for $ty {
            fn from_sql(bytes: <MultiBackend as Backend>::RawValue<'_>) -> deserialize::Result<Self> {
                bytes.from_sql::<Self, Text>()
            }
        }

        impl<DB: Backend> diesel::deserialize::Queryable<Text, DB> for $ty
        where
            Self: FromSql<Text, DB>,
        {
            type Row = Self;

            fn build(row: Self) -> deserialize::Result<Self> {
                Ok(row)
            }
        }

        impl diesel::expression::AsExpression<Text> for $ty {
            type Expression = diesel::internal::derives::as_expression::Bound<Text, Self>;

            fn as_expression(self) -> Self::Expression {
                diesel::internal::derives::as_expression::Bound::new(self)
            }
        }

        impl<'a> diesel::expression::AsExpression<Text> for &'a $ty {
            type Expression = diesel::internal::derives::as_expression::Bound<Text, Self>;

            fn as_expression(self) -> Self::Expression {
                diesel::internal::derives::as_expression::Bound::new(self)
            }
        }

        impl diesel::expression::AsExpression<diesel::sql_types::Nullable<Text>> for $ty {
            type Expression = diesel::internal::derives::as_expression::Bound<diesel::sql_types::Nullable<Text>, Self>;

            fn as_expression(self) -> Self::Expression {
                diesel::internal::derives::as_expression::Bound::new(self)
            }
        }

        impl<'a> diesel::expression::AsExpression<diesel::sql_types::Nullable<Text>> for &'a $ty {
            type Expression = diesel::internal::derives::as_expression::Bound<diesel::sql_types::Nullable<Text>, Self>;

            fn as_expression(self) -> Self::Expression {
                diesel::internal::derives::as_expression::Bound::new(self)
            }
        }

        impl<DB: Backend> ToSql<diesel::sql_types::Nullable<Text>, DB> for $ty
        where
            Self: ToSql<Text, DB>,
        {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, DB>) -> serialize::Result {
                <Self as ToSql<Text, DB>>::to_sql(self, out)
            }
        }
    )+};
}

fn parse_stored<T>(text: &str, what: &str, parse: fn(&str) -> Option<T>) -> deserialize::Result<T> {
    parse(text).ok_or_else(|| format!("{text:?} is not a stored {what}").into())
}

use crate::domain::alerts::{AlertEntity, AlertKind, AlertSeverity, AlertStatus, AlertTransition};
use crate::domain::blood::{Abo, Cmv, DonorType, Rhd, Sex, UnitRhd};
use crate::domain::compatibility::Stage;
use crate::domain::compatibility::{CrossmatchKind, CrossmatchMethod, CrossmatchResult};
use crate::domain::eligibility::ProcedureKind;
use crate::domain::outcome::AncStatus;
use crate::domain::requests::{AllocationStatus, Priority, RequestStatus};
use crate::domain::scheduling::CollectionStatus;
use crate::domain::stimulation::DoseUnit;
use crate::domain::tasks::{OwnerRole, TaskKind, TaskStatus};
use crate::domain::units::{ReleaseKind, TestResult, UnitSource, UnitStatus};

stored_text!(
    AlertSeverity,
    Abo,
    Cmv,
    DonorType,
    Rhd,
    Sex,
    UnitRhd,
    CrossmatchKind,
    CrossmatchMethod,
    CrossmatchResult,
    AllocationStatus,
    Priority,
    RequestStatus,
    UnitStatus,
    AlertKind,
    AlertStatus,
    AlertEntity,
    AlertTransition,
    CollectionStatus,
    DoseUnit,
    ProcedureKind,
    ReleaseKind,
    Stage,
    TestResult,
    UnitSource,
    OwnerRole,
    TaskKind,
    TaskStatus,
    AncStatus,
);
