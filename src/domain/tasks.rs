//! What a task is, who owns it and where it stands (issue 13: follow-up work with a due time).

use super::text_enum;

text_enum!(
    TaskKind {
        AntiDProphylaxis => "anti_d_prophylaxis",
        LookForward => "look_forward",
        EmergencyReleaseFollowUp => "emergency_release_follow_up",
    }
);

text_enum!(
    TaskStatus { Open => "open", Done => "done" }
);

text_enum!(
    /// The staff role a task belongs to.
    OwnerRole {
        Admin => "admin",
        MedicalDirector => "medical_director",
        Technologist => "technologist",
    }
);
