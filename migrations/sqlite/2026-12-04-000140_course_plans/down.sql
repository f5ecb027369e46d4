DROP TABLE donor_availability;
DROP TABLE course_plan_days;
DROP TABLE course_plans;
