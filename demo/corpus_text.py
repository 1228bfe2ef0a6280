# The demo corpus's words: (path, kind, title, content). For md/html the
# content is [(section heading, [paragraphs])]; for txt/pdf/docx a list of
# paragraphs ("## " starts a heading in DOCX). Written for Sovra's demo;
# the institutions, numbers and codes are fictional.
DOCS = [
# ---------------- all staff (group: staff) ----------------
("staff/annual-leave-policy.md", "md", "Annual Leave Policy (POL-HR-002)", [
  ("Entitlement", ["Every permanent employee is entitled to 22 working days of paid annual leave per calendar year. Part-time employees receive leave pro rata to their contracted hours.",
                   "Up to 5 unused days may be carried over into the first quarter of the following year; days not taken by 31 March lapse."]),
  ("Requesting time off", ["Requests for time off are submitted in the HR portal at least 10 working days in advance. Requests of more than 10 consecutive days need the approval of the head of department.",
                           "During the quarter-end closing period (the last 5 working days of each quarter) finance and treasury staff may not take leave except in emergencies."]),
  ("Unpaid leave of absence", ["An unpaid leave of absence of up to 3 months may be granted for study, family care or personal reasons. It does not break continuity of service."]),
]),
("staff/kebijakan-cuti.md", "md", "Kebijakan Cuti Tahunan (POL-HR-002-ID)", [
  ("Hak cuti", ["Setiap karyawan tetap berhak atas 22 hari kerja cuti tahunan berbayar per tahun kalender. Karyawan paruh waktu menerima cuti secara proporsional.",
                "Paling banyak 5 hari cuti yang tidak digunakan dapat dibawa ke triwulan pertama tahun berikutnya."]),
  ("Pengajuan cuti", ["Permohonan cuti diajukan melalui portal SDM paling lambat 10 hari kerja sebelumnya. Cuti lebih dari 10 hari berturut-turut memerlukan persetujuan kepala departemen."]),
]),
("staff/leave-policy-zh.txt", "txt", "年假制度（POL-HR-002-ZH）", [
  "所有正式员工每个日历年享有二十二个工作日的带薪年假。兼职员工按合同工时比例享有年假。",
  "未使用的年假最多可结转五天至次年第一季度，三月三十一日前未使用的天数自动作废。",
  "请假申请须至少提前十个工作日在人力资源系统中提交。连续休假超过十天须经部门负责人批准。",
]),
("staff/code-of-conduct.md", "md", "Code of Conduct", [
  ("Gifts and hospitality", ["Staff may not accept gifts worth more than USD 100 from clients or suppliers. Every gift above USD 25 is recorded in the gifts register within 5 working days."]),
  ("Conflicts of interest", ["A personal interest that could influence a business decision must be declared to Compliance before the decision is taken."]),
  ("Speaking up", ["Concerns about misconduct can be raised anonymously through the whistleblowing line, extension 4455. Retaliation against a whistleblower is a disciplinary offence."]),
]),
("staff/password-policy.html", "html", "Password and Access Policy (POL-IT-011)", [
  ("Passwords", ["Passwords are at least 14 characters long and are never reused across systems. Multi-factor authentication is mandatory for remote access and for every privileged account."]),
  ("Access reviews", ["Line managers review their team's system access every quarter. Access of leavers is removed on their last working day."]),
]),
("staff/holiday-calendar.txt", "txt", "Public Holiday Calendar and Office Hours", [
  "Offices are open Monday to Friday from 08:00 to 17:00. Branches open on Saturday mornings from 09:00 to 12:00.",
  "On public holidays all offices are closed; the operations duty desk remains reachable on extension 2000.",
]),
("staff/expense-claims.docx", "docx", "Travel and Expense Claims (POL-FIN-005)", [
  "## Submitting a claim",
  "Expense claims are submitted within 30 days of the expense with original receipts. Claims older than 90 days are not reimbursed.",
  "## Limits",
  "Hotel costs are reimbursed up to USD 180 per night in capital cities and USD 120 elsewhere. Business class travel is allowed only for flights longer than 6 hours.",
]),
# ---------------- treasury (group: treasury) ----------------
("treasury/fx-dealing-limits.md", "md", "FX Dealing Limits (POL-TR-014)", [
  ("Dealer limits", ["A junior dealer may commit spot FX trades up to USD 5 million per ticket. Senior dealers may commit up to USD 25 million per ticket.",
                     "Any ticket above USD 25 million needs the prior approval of the Head of Treasury, recorded in the dealing system before execution."]),
  ("Open position limits", ["The overnight open position limit is USD 40 million across all currencies, with a sub-limit of USD 15 million in any single emerging-market currency."]),
  ("Limit breaches", ["A breach is reported to Market Risk within 30 minutes and explained in writing by the end of the day."]),
]),
("treasury/liquidity-policy.pdf", "pdf", "Liquidity Risk Management Policy (POL-TR-020)", [
  "The bank maintains a liquidity coverage ratio (LCR) of at least 110 percent at all times, above the regulatory minimum of 100 percent.",
  "The net stable funding ratio (NSFR) is kept above 105 percent. Treasury reports both ratios to the Asset and Liability Committee (ALCO) every week.",
  "If the LCR falls below 115 percent, the contingency funding plan is activated and the Chief Financial Officer is informed on the same day.",
]),
("treasury/dealing-room-procedures.docx", "docx", "Dealing Room Procedures (PRO-TR-003)", [
  "## Recorded lines",
  "All dealing room telephone lines are recorded. Mobile phones are not used for dealing and are stored in lockers during trading hours.",
  "## Trade confirmation",
  "Every trade is confirmed with the counterparty within 2 hours. Unconfirmed trades are escalated to the back-office supervisor at 16:00.",
]),
("treasury/prosedur-treasuri.txt", "txt", "Prosedur Batas Transaksi Valas (POL-TR-014-ID)", [
  "Dealer junior boleh melakukan transaksi valas spot hingga USD 5 juta per tiket. Dealer senior hingga USD 25 juta per tiket.",
  "Tiket di atas USD 25 juta memerlukan persetujuan Kepala Treasuri sebelum eksekusi.",
]),
("treasury/interest-rate-risk.md", "md", "Interest Rate Risk in the Banking Book (POL-TR-022)", [
  ("Measurement", ["Interest rate risk is measured monthly as the change in economic value of equity (EVE) under six standard rate shocks."]),
  ("Limits", ["The EVE loss under the worst shock may not exceed 12 percent of Tier 1 capital."]),
]),
# ---------------- compliance (group: compliance) ----------------
("compliance/aml-kyc-policy.md", "md", "Anti-Money Laundering and Know Your Customer Policy (POL-CO-001)", [
  ("Customer due diligence", ["Before opening an account the bank verifies the customer's identity with a government-issued photo ID and proof of address no older than 3 months.",
                              "Enhanced due diligence applies to politically exposed persons (PEPs) and to customers from high-risk jurisdictions, and needs the approval of a senior manager."]),
  ("Cash transactions", ["Cash deposits of USD 10,000 or more, or several deposits that together reach that amount within 24 hours, are reported to the Financial Intelligence Unit."]),
]),
("compliance/sanctions-screening.html", "html", "Sanctions Screening Procedure (PRO-CO-004)", [
  ("Screening", ["All customers and all payment parties are screened against the consolidated sanctions lists before onboarding and before every international payment."]),
  ("Potential matches", ["A potential match stops the payment. The compliance analyst resolves it within 1 business day; a confirmed match is frozen and reported to the regulator."]),
]),
("compliance/suspicious-activity-reports.pdf", "pdf", "Suspicious Activity Reporting (PRO-CO-007)", [
  "Any employee who suspects money laundering or terrorist financing files an internal suspicious activity report on form FIN-07 without telling the customer.",
  "The Money Laundering Reporting Officer (MLRO) decides within 5 working days whether to file a report with the Financial Intelligence Unit.",
  "Tipping off a customer about a report is a criminal offence and a disciplinary matter.",
]),
("compliance/aml-policy-zh.md", "md", "反洗钱政策（POL-CO-001-ZH）", [
  ("客户尽职调查", ["开户前，银行须核实客户身份，查验政府签发的带照片证件及三个月内的地址证明。", "对政治公众人物及高风险地区客户实施强化尽职调查，并须经高级管理人员批准。"]),
  ("现金交易", ["单笔或二十四小时内累计达到一万美元的现金存款，须向金融情报机构报告。"]),
]),
("compliance/record-retention.txt", "txt", "Record Retention Schedule (POL-CO-010)", [
  "Customer identification records are kept for 7 years after the end of the relationship. Transaction records are kept for 7 years after the transaction.",
  "Audit trails of systems that process customer data are kept for 7 years and are protected against alteration.",
]),
# ---------------- nursing (group: nursing) ----------------
("nursing/hand-hygiene.md", "md", "Hand Hygiene Procedure (NUR-IC-001)", [
  ("The five moments", ["Clean hands before touching a patient, before a clean or aseptic procedure, after body fluid exposure risk, after touching a patient, and after touching patient surroundings."]),
  ("Technique", ["Alcohol-based hand rub is applied for 20 to 30 seconds. Soap and water are used for 40 to 60 seconds when hands are visibly soiled or after caring for a patient with Clostridioides difficile."]),
]),
("nursing/medication-administration.docx", "docx", "Medication Administration (NUR-MED-002)", [
  "## The five rights",
  "Before giving any medicine, check the right patient, right drug, right dose, right route and right time against the prescription and the patient's wristband.",
  "## Double checks",
  "Intravenous potassium, insulin and heparin infusions are double-checked by two registered nurses before they are started.",
]),
("nursing/fall-prevention.html", "html", "Patient Fall Prevention (NUR-SAF-004)", [
  ("Assessment", ["Every adult inpatient is assessed with the Morse Fall Scale on admission, after a fall, and when their condition changes. A score of 45 or more means high risk."]),
  ("Interventions", ["High-risk patients have a bed alarm, a low bed, non-slip socks and hourly rounding. Call bells are always within reach."]),
]),
("nursing/sepsis-protocol.pdf", "pdf", "Adult Sepsis Protocol (NUR-EM-006)", [
  "Suspect sepsis when a patient with a possible infection has a National Early Warning Score (NEWS2) of 5 or more.",
  "Within one hour: take blood cultures before antibiotics, give broad-spectrum antibiotics, measure serum lactate, start intravenous fluids of 30 ml per kg if hypotensive, and monitor urine output.",
  "Escalate to the critical care outreach team if lactate is above 4 mmol/L or systolic blood pressure stays below 90 mmHg after fluids.",
]),
("nursing/pencegahan-infeksi.md", "md", "Prosedur Pencegahan dan Pengendalian Infeksi (NUR-IC-001-ID)", [
  ("Kebersihan tangan", ["Lakukan kebersihan tangan sebelum menyentuh pasien, sebelum tindakan aseptik, setelah terpapar cairan tubuh, setelah menyentuh pasien, dan setelah menyentuh lingkungan pasien."]),
  ("Alat pelindung diri", ["Sarung tangan dan gaun dipakai untuk pasien dengan isolasi kontak. Masker N95 dipakai untuk pasien dengan tuberkulosis paru."]),
]),
("nursing/triage-zh.txt", "txt", "急诊分诊流程（NUR-EM-001-ZH）", [
  "患者到达急诊后五分钟内完成分诊，采用五级分诊标准。",
  "一级为危及生命，须立即抢救；二级为高危，须十分钟内由医生接诊；三级为紧急，三十分钟内接诊。",
  "分诊护士每三十分钟重新评估候诊患者的生命体征。",
]),
("nursing/handover.md", "md", "Shift Handover (NUR-COM-003)", [
  ("SBAR", ["Handover between shifts uses SBAR: situation, background, assessment and recommendation, at the bedside where possible."]),
  ("Timing", ["Handover starts 15 minutes before the end of a shift and covers every patient, including pending results and planned procedures."]),
]),
# ---------------- pharmacy (group: pharmacy) ----------------
("pharmacy/controlled-drugs.md", "md", "Controlled Drugs Procedure (PHA-CD-001)", [
  ("Storage", ["Controlled drugs are kept in a locked cabinet inside a locked room. The keys are held by the nurse in charge."]),
  ("Register", ["Every receipt and administration of a controlled drug is entered in the controlled drug register and signed by two staff. Stock is counted at every shift change."]),
]),
("pharmacy/formulary-codes.txt", "txt", "Formulary Codes for High-Use Medicines", [
  "Morphine sulfate injection 10 mg/ml: formulary code FM-0412, ATC N02AA01, controlled drug schedule 2.",
  "Paracetamol tablets 500 mg: formulary code FM-0007, ATC N02BE01.",
  "Enoxaparin injection 40 mg: formulary code FM-1180, ATC B01AB05, high-alert medicine.",
  "Insulin glargine 100 units/ml: formulary code FM-2231, ATC A10AE04, high-alert medicine.",
]),
("pharmacy/high-alert-medicines.pdf", "pdf", "High-Alert Medicines (PHA-SAF-002)", [
  "High-alert medicines carry a heightened risk of significant harm when used in error: insulin, anticoagulants such as enoxaparin and heparin, concentrated potassium chloride and opioids.",
  "Concentrated potassium chloride is stored only in pharmacy and critical care areas and is never kept on general wards.",
  "Every dose of a high-alert medicine is independently double-checked before administration.",
]),
("pharmacy/antibiotic-stewardship.docx", "docx", "Antimicrobial Stewardship (PHA-AB-003)", [
  "## Review at 48 hours",
  "Every intravenous antibiotic is reviewed by the prescriber 48 to 72 hours after it is started, with the culture results, to stop, switch to oral, or narrow the therapy.",
  "## Restricted antibiotics",
  "Meropenem and vancomycin are restricted: they need approval from a microbiologist or an infectious diseases physician within 24 hours.",
]),
# ---------------- management (group: management) ----------------
("management/board-risk-appetite.md", "md", "Board Risk Appetite Statement (GOV-001)", [
  ("Capital", ["The bank keeps a Common Equity Tier 1 ratio of at least 12.5 percent, 2 percentage points above its regulatory requirement."]),
  ("Operational risk", ["The bank has no appetite for breaches of sanctions law and a low appetite for operational losses above USD 1 million per year."]),
]),
("management/incident-escalation.html", "html", "Incident Escalation Matrix (GOV-PRO-004)", [
  ("Severity 1", ["A severity 1 incident (customer data breach, payment system outage longer than 1 hour) is escalated to the Chief Executive within 30 minutes and to the regulator within 24 hours."]),
  ("Severity 2", ["A severity 2 incident is escalated to the responsible executive within 4 hours."]),
]),
]
