//! Hospital requests and allocations (domain.md §4): the indication gate, and the status
//! machines of requests and allocations.

use super::text_enum;
use crate::domain::eligibility::Reason;
use crate::domain::policy::{ApprovalPolicy, Policy};

text_enum!(
    RequestStatus {
        PendingApproval => "pending_approval",
        Open => "open",
        Fulfilled => "fulfilled",
        Cancelled => "cancelled",
        Declined => "declined",
    }
);

text_enum!(
    Priority {
        Stat => "stat",
        Asap => "asap",
        Routine => "routine",
        Scheduled => "scheduled",
    }
);

text_enum!(
    RequestAction {
        Approve => "approve",
        Decline => "decline",
        Cancel => "cancel",
        Fulfil => "fulfil",
        Reopen => "reopen",
        Allocate => "allocate",
    }
);

/// The status after `action`, `None` when not allowed. `Allocate` keeps the status (only an
/// open request takes allocations).
pub fn next_request_status(from: RequestStatus, action: RequestAction) -> Option<RequestStatus> {
    use RequestAction as A;
    use RequestStatus::*;
    match (from, action) {
        (PendingApproval, A::Approve) => Some(Open),
        (PendingApproval, A::Decline) => Some(Declined),
        (PendingApproval | Open, A::Cancel) => Some(Cancelled),
        (Open, A::Fulfil) => Some(Fulfilled),
        (Fulfilled, A::Reopen) => Some(Open),
        (Open, A::Allocate) => Some(Open),
        _ => None,
    }
}

text_enum!(
    AllocationStatus {
        Allocated => "allocated",
        Issued => "issued",
        Transfused => "transfused",
        Returned => "returned",
        Cancelled => "cancelled",
    }
);

text_enum!(
    AllocationAction {
        Issue => "issue",
        Return => "return",
        Cancel => "cancel",
        Transfuse => "transfuse",
    }
);

pub fn next_allocation_status(from: AllocationStatus, action: AllocationAction) -> Option<AllocationStatus> {
    use AllocationAction as A;
    use AllocationStatus::*;
    match (from, action) {
        (Allocated, A::Issue) => Some(Issued),
        (Allocated, A::Cancel) => Some(Cancelled),
        (Issued, A::Return) => Some(Returned),
        (Issued, A::Transfuse) => Some(Transfused),
        _ => None,
    }
}

/// Active allocations hold their unit (the partial unique index covers the same statuses).
pub fn is_active(status: AllocationStatus) -> bool {
    matches!(status, AllocationStatus::Allocated | AllocationStatus::Issued)
}

pub mod codes {
    pub const ANC_ABOVE_THRESHOLD: &str = "anc_above_threshold";
    pub const REFRACTORY_PERIOD_SHORT: &str = "refractory_period_short";
    pub const APPROVAL_ALWAYS_REQUIRED: &str = "approval_always_required";
}

/// The clinical indication given with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Indication {
    pub anc_per_ul: u32,
    pub refractory_hours: u32,
}

/// Why a request is outside the indication (empty when inside): ANC below the policy threshold
/// and infection refractory for at least the policy hours.
pub fn outside_indication(ind: Indication, policy: &Policy) -> Vec<Reason> {
    let r = &policy.recipient;
    let mut reasons = Vec::new();
    if ind.anc_per_ul >= r.anc_threshold_per_ul {
        reasons.push(Reason {
            code: codes::ANC_ABOVE_THRESHOLD,
            message: format!("ANC {}/µL is not below {}/µL", ind.anc_per_ul, r.anc_threshold_per_ul),
        });
    }
    if ind.refractory_hours < r.refractory_hours {
        reasons.push(Reason {
            code: codes::REFRACTORY_PERIOD_SHORT,
            message: format!(
                "infection refractory for {} h; the indication needs at least {} h",
                ind.refractory_hours, r.refractory_hours
            ),
        });
    }
    reasons
}

/// The status a new request starts in, with the reasons it needs approval (if it does).
pub fn initial_status(ind: Indication, policy: &Policy) -> (RequestStatus, Vec<Reason>) {
    let outside = outside_indication(ind, policy);
    match policy.request.approval {
        ApprovalPolicy::Never => (RequestStatus::Open, outside),
        ApprovalPolicy::OutsideIndication if outside.is_empty() => (RequestStatus::Open, outside),
        ApprovalPolicy::OutsideIndication => (RequestStatus::PendingApproval, outside),
        ApprovalPolicy::Always => {
            let mut reasons = outside;
            reasons.push(Reason {
                code: codes::APPROVAL_ALWAYS_REQUIRED,
                message: "the policy requires a medical director's approval for every request".to_owned(),
            });
            (RequestStatus::PendingApproval, reasons)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_transition() {
        use RequestAction as A;
        use RequestStatus::*;
        let allowed = [
            (PendingApproval, A::Approve, Open),
            (PendingApproval, A::Decline, Declined),
            (PendingApproval, A::Cancel, Cancelled),
            (Open, A::Cancel, Cancelled),
            (Open, A::Fulfil, Fulfilled),
            (Fulfilled, A::Reopen, Open),
            (Open, A::Allocate, Open),
        ];
        for from in RequestStatus::ALL {
            for action in RequestAction::ALL {
                let expected = allowed.iter().find(|(f, a, _)| f == from && a == action).map(|x| x.2);
                assert_eq!(next_request_status(*from, *action), expected, "{from} --{action}-->");
            }
        }
    }

    #[test]
    fn every_allocation_transition() {
        use AllocationAction as A;
        use AllocationStatus::*;
        let allowed = [
            (Allocated, A::Issue, Issued),
            (Allocated, A::Cancel, Cancelled),
            (Issued, A::Return, Returned),
            (Issued, A::Transfuse, Transfused),
        ];
        for from in AllocationStatus::ALL {
            for action in AllocationAction::ALL {
                let expected = allowed.iter().find(|(f, a, _)| f == from && a == action).map(|x| x.2);
                assert_eq!(next_allocation_status(*from, *action), expected, "{from} --{action}-->");
            }
        }
        let active: Vec<_> = AllocationStatus::ALL.iter().filter(|s| is_active(**s)).collect();
        assert_eq!(active, vec![&Allocated, &Issued]);
    }

    #[test]
    fn indication_gate_at_its_boundaries() {
        let mut p = Policy::default();
        let ind = |anc, hours| Indication {
            anc_per_ul: anc,
            refractory_hours: hours,
        };
        let codes = |i: Indication, p: &Policy| {
            let (status, reasons) = initial_status(i, p);
            (status, reasons.iter().map(|r| r.code).collect::<Vec<_>>())
        };
        assert_eq!(codes(ind(499, 48), &p), (RequestStatus::Open, vec![]));
        assert_eq!(
            codes(ind(500, 48), &p),
            (RequestStatus::PendingApproval, vec![codes::ANC_ABOVE_THRESHOLD])
        );
        assert_eq!(
            codes(ind(100, 47), &p),
            (RequestStatus::PendingApproval, vec![codes::REFRACTORY_PERIOD_SHORT])
        );
        assert_eq!(
            codes(ind(900, 2), &p).1,
            vec![codes::ANC_ABOVE_THRESHOLD, codes::REFRACTORY_PERIOD_SHORT]
        );
        p.request.approval = ApprovalPolicy::Always;
        assert_eq!(
            codes(ind(100, 72), &p),
            (RequestStatus::PendingApproval, vec![codes::APPROVAL_ALWAYS_REQUIRED])
        );
        p.request.approval = ApprovalPolicy::Never;
        assert_eq!(codes(ind(900, 2), &p).0, RequestStatus::Open);
        p.recipient.anc_threshold_per_ul = 1000;
        p.recipient.refractory_hours = 24;
        p.request.approval = ApprovalPolicy::OutsideIndication;
        assert_eq!(codes(ind(900, 24), &p), (RequestStatus::Open, vec![]));
    }
}
