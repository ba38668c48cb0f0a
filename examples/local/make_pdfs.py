"""Write the PDF documents of the demo corpus (Larkspur Freight) from the line lists below.

Run from the repository root, with the test kit (`tests/testkit`, where `write_pdf` lives) on
the import path:

    PYTHONPATH=tests .venv/bin/python examples/local/make_pdfs.py

Each list is one document, one PDF text line per entry ("" is a blank line). Keep lines under
about 85 characters so they fit the page. `hr/leave-policy.pdf` is written by
`tests/testkit/corpus.py` itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

from testkit.corpus import write_pdf

DOCS = Path(__file__).resolve().parent / "docs"

DISASTER_RECOVERY = [
    "Disaster Recovery Plan",
    "",
    "1. Purpose",
    "",
    "This plan describes how Larkspur Freight restores its services after the loss of a",
    "cluster or of a whole cloud region.",
    "Owner: Platform team",
    "Plan owner: Joost van Dijk, Platform lead",
    "Review cycle: every 6 months",
    "",
    "2. Recovery Objectives",
    "",
    "RTO means the maximum time a service may be unavailable after a disaster.",
    "RPO means the maximum amount of data, measured in time, that may be lost.",
    "Tier 1 RTO: 1 hour",
    "Tier 1 RPO: 5 minutes",
    "Tier 2 RTO: 4 hours",
    "Tier 2 RPO: 1 hour",
    "Tier 3 RTO: 24 hours",
    "Tier 3 RPO: 24 hours",
    "Service tiers are defined in the Platform Glossary.",
    "",
    "3. Standby Region",
    "",
    "The standby cluster for production is kube-prd-4 in eu-west-1.",
    "Production databases replicate continuously to the standby region. Tier 1 services",
    "keep warm standby replicas there. Tier 2 and Tier 3 services are redeployed from their",
    "last release during a failover.",
    "Nightly database backups are the last line of defence; see Data Retention.",
    "",
    "4. Failover Procedure",
    "",
    "1. The incident commander declares a disaster in the #inc-bridge channel.",
    "2. The Platform lead approves the failover to kube-prd-4.",
    "3. Platform on-call runs freightctl dr failover --to kube-prd-4.",
    "4. The Network team points the public DNS records at the standby region.",
    "5. Each Tier 1 team confirms that its service passes its smoke tests.",
    "6. The incident commander posts an update on the status page.",
    "",
    "5. Failover Tests",
    "",
    "A failover test is a planned rehearsal of the failover procedure on production.",
    "Full region failover is rehearsed twice a year, in March and September.",
    "Test results are filed in the DR register within 5 business days.",
    "Findings from a failover test are tracked like postmortem action items.",
]

PERFORMANCE_REVIEWS = [
    "Performance Reviews",
    "",
    "1. Review Cycle",
    "",
    "Larkspur Freight runs two performance review cycles every year.",
    "Mid-year review: July",
    "Annual review: January",
    "Review tool: Compass",
    "Owner: People Operations",
    "Only the annual review decides promotions and salary changes.",
    "",
    "2. Ratings",
    "",
    "Every review ends with a rating on a four-point scale.",
    "Rating 4 means the employee consistently exceeds expectations.",
    "Rating 3 means the employee fully meets expectations.",
    "Rating 2 means the employee partly meets expectations.",
    "Rating 1 means the employee does not meet expectations.",
    "",
    "3. Timeline",
    "",
    "Self-assessment deadline: 2 weeks before the review meeting",
    "Peer feedback: 3 to 5 peers per employee",
    "Review meeting length: 60 minutes",
    "A calibration session is a meeting in which managers compare ratings across teams,",
    "so that the same rating means the same thing everywhere.",
    "Calibration sessions are held in the last week of each review cycle.",
    "",
    "4. Salary Changes",
    "",
    "Salary changes from the annual review take effect on 1 April.",
    "Promotion proposals are written by the manager and approved by the department head.",
    "",
    "5. Improvement Plans",
    "",
    "A performance improvement plan is a written plan with clear goals for an employee",
    "who received a rating of 1.",
    "The default length of a performance improvement plan is 60 days.",
    "Progress check-ins: every 2 weeks",
    "People Operations attends the first and the last meeting of every plan.",
]

TRAVEL_AND_EXPENSES = [
    "Travel and Expenses Policy",
    "",
    "1. Submitting Claims",
    "",
    "Expenses are claimed in Ledgerline, the finance tool.",
    "Claims must be submitted within 30 days of the expense.",
    "Receipts are required for every expense above EUR 25.",
    "Approved claims are paid with the next monthly payroll.",
    "Claims up to EUR 1,000 are approved by your manager. Claims above EUR 1,000 also need",
    "approval from the Finance controller.",
    "",
    "2. Booking Travel",
    "",
    "Book all flights, trains and hotels through the travel desk at travel@larkspur.example.",
    "Take the train for journeys of up to 5 hours.",
    "Flights are booked in economy class. Business class is allowed for flights over 6 hours",
    "with approval from a director.",
    "Book travel at least 14 days in advance where possible.",
    "",
    "3. Daily Allowances",
    "",
    "A per diem is a fixed daily allowance for meals and small costs while travelling.",
    "Netherlands per diem: EUR 45",
    "Poland per diem: PLN 150",
    "United Kingdom per diem: GBP 40",
    "No per diem is paid for a day trip shorter than 8 hours.",
    "",
    "4. Hotels",
    "",
    "Hotel limit: EUR 160 per night",
    "London hotel limit: GBP 200 per night",
    "Hotel stays longer than 5 nights need approval from the Finance controller.",
    "",
    "5. Not Reimbursed",
    "",
    "Alcohol, fines, seat upgrades and personal entertainment are not reimbursed.",
    "A lost receipt may be replaced by a signed statement at most twice per year.",
    "Questions about a claim go to expenses@larkspur.example.",
]

PDFS = {
    "platform/disaster-recovery.pdf": DISASTER_RECOVERY,
    "hr/performance-reviews.pdf": PERFORMANCE_REVIEWS,
    "finance/travel-and-expenses.pdf": TRAVEL_AND_EXPENSES,
}


def main() -> None:
    for key, lines in PDFS.items():
        target = DOCS / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(write_pdf(lines))
        sys.stdout.write(f"wrote {target.relative_to(DOCS.parent)} ({len(lines)} lines)\n")


if __name__ == "__main__":
    main()
