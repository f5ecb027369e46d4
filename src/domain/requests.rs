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
    use proptest::prelude::*;

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

    proptest! {
        #[test]
        fn request_and_allocation_machines_never_leave_a_final_state(
            request_steps in prop::collection::vec(prop::sample::select(RequestAction::ALL), 0..16),
            allocation_steps in prop::collection::vec(prop::sample::select(AllocationAction::ALL), 0..8),
            starts_pending in any::<bool>(),
        ) {
            use RequestStatus::*;
            let mut request = if starts_pending { PendingApproval } else { Open };
            for action in request_steps {
                if let Some(to) = next_request_status(request, action) {
                    prop_assert!(!matches!(request, Cancelled | Declined), "{} left", request);
                    prop_assert!(to != Fulfilled || request == Open);
                    prop_assert!(to != Declined || request == PendingApproval);
                    prop_assert!(action != RequestAction::Allocate || (request == Open && to == Open));
                    request = to;
                }
            }
            use crate::domain::units::{UnitAction, UnitStatus, next_status};
            // An allocation holds its unit: each allocation move is a move the unit can make.
            let (mut allocation, mut unit) = (AllocationStatus::Allocated, UnitStatus::Allocated);
            for action in allocation_steps {
                let unit_action = match action {
                    AllocationAction::Issue => UnitAction::Issue,
                    AllocationAction::Return => UnitAction::Return,
                    AllocationAction::Cancel => UnitAction::Deallocate,
                    AllocationAction::Transfuse => UnitAction::Transfuse,
                };
                match next_allocation_status(allocation, action) {
                    Some(to) => {
                        prop_assert!(is_active(allocation), "{} left", allocation);
                        let moved = next_status(unit, unit_action);
                        prop_assert!(
                            moved.is_some(),
                            "allocation {} but unit {} cannot {}",
                            allocation,
                            unit,
                            unit_action
                        );
                        unit = moved.unwrap_or(unit);
                        allocation = to;
                        let held = matches!(unit, UnitStatus::Allocated | UnitStatus::Issued);
                        prop_assert_eq!(is_active(allocation), held);
                    }
                    None => prop_assert!(!is_active(allocation) || matches!(
                        (allocation, action),
                        (AllocationStatus::Allocated, AllocationAction::Return | AllocationAction::Transfuse)
                            | (AllocationStatus::Issued, AllocationAction::Issue | AllocationAction::Cancel)
                    )),
                }
            }
        }

        #[test]
        fn the_indication_gate_follows_the_policy(
            anc in prop_oneof![0u32..2_000, Just(499), Just(500), Just(501)],
            hours in prop_oneof![0u32..200, Just(47), Just(48), Just(49)],
            thresholds in prop::option::of((1u32..1_000, 1u32..100)),
            approval in prop::sample::select(vec![
                ApprovalPolicy::OutsideIndication,
                ApprovalPolicy::Always,
                ApprovalPolicy::Never,
            ]),
        ) {
            let mut p = Policy::default();
            if let Some((anc_threshold, refractory)) = thresholds {
                p.recipient.anc_threshold_per_ul = anc_threshold;
                p.recipient.refractory_hours = refractory;
            }
            p.request.approval = approval;
            let ind = Indication { anc_per_ul: anc, refractory_hours: hours };
            let (status, reasons) = initial_status(ind, &p);
            let mut expected = Vec::new();
            if anc >= p.recipient.anc_threshold_per_ul {
                expected.push(codes::ANC_ABOVE_THRESHOLD);
            }
            if hours < p.recipient.refractory_hours {
                expected.push(codes::REFRACTORY_PERIOD_SHORT);
            }
            let outside = !expected.is_empty();
            if approval == ApprovalPolicy::Always {
                expected.push(codes::APPROVAL_ALWAYS_REQUIRED);
            }
            prop_assert_eq!(reasons.iter().map(|r| r.code).collect::<Vec<_>>(), expected);
            let pending =
                approval == ApprovalPolicy::Always || (approval == ApprovalPolicy::OutsideIndication && outside);
            prop_assert_eq!(status, if pending { RequestStatus::PendingApproval } else { RequestStatus::Open });
        }
    }
}
