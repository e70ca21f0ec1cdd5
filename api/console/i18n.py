"""The console's words in Chinese (the default) and English, one catalogue; amounts and times.

``MESSAGES`` maps a key to its (Chinese, English) text; a template says ``t("key")``. A missing key
is a programming error (KeyError), found by the page's test, never shown to a clerk as a raw key.
Amounts are integer fen shown as yuan with thousands separators (no float on the way); times are the
one clock's local time (config/clock.py: the business timezone).
"""
from __future__ import annotations

from datetime import datetime
from typing import Callable

from api.json_types import as_utc
from config.clock import Clock

LANGS = ("zh", "en")
DEFAULT_LANG = "zh"

MESSAGES: dict[str, tuple[str, str]] = {
    "app.title": ("gridpay 员工控制台", "gridpay staff console"),
    "app.skip": ("跳到正文", "Skip to content"),
    "lang.switch": ("English", "中文"),
    "menu.label": ("主菜单", "Main menu"),
    "menu.home": ("首页", "Home"),
    "menu.approvals": ("审批", "Approvals"),
    "menu.customers": ("客户查询", "Customers"),
    "signin.title": ("登录", "Sign in"),
    "signin.user": ("用户名", "User name"),
    "signin.password": ("密码", "Password"),
    "signin.totp": ("动态口令（已启用双因素时填写）", "TOTP code (if you enrolled one)"),
    "signin.submit": ("登录", "Sign in"),
    "signin.refused": ("用户名、密码或动态口令错误。", "Wrong user name, password or TOTP code."),
    "signin.locked": ("登录失败次数过多，账户已暂时锁定。", "Too many failed sign-ins: the account is locked for a while."),
    "signin.throttled": ("此地址登录尝试过多，请稍后再试。", "Too many sign-in attempts from this address: try again later."),
    "signin.expired": ("会话已过期，请重新登录。", "Your session has expired: sign in again."),
    "signin.needed": ("请先登录。", "Please sign in."),
    "signin.signed_out": ("您已退出。", "You have signed out."),
    "signout.submit": ("退出", "Sign out"),
    "home.title": ("首页", "Home"),
    "home.welcome": ("欢迎，{name}。", "Welcome, {name}."),
    "home.roles": ("角色", "Roles"),
    "home.pages": ("您可以使用的页面", "Pages you may use"),
    "home.shortcuts": ("快捷键", "Keyboard shortcuts"),
    "home.shortcut.accesskey": ("菜单项：浏览器的访问键加括号中的字母（Chrome：Alt+字母）。",
                                "Menu items: the browser's access key plus the letter in brackets (Chrome: Alt+letter)."),
    "home.shortcut.search": ("“/”：跳到本页第一个输入框。", "\"/\": jump to the page's first input field."),
    "forbidden.title": ("无权访问", "Not allowed"),
    "forbidden.text": ("您的角色无权使用此页面（{permission}）。此次拒绝已记录。",
                       "Your roles do not allow this page ({permission}). The refusal was recorded."),
    "csrf.title": ("请求被拒绝", "Request refused"),
    "csrf.text": ("表单已失效或不是从本控制台提交的。请返回重新提交。此次拒绝已记录。",
                  "The form was stale or not sent from this console. Go back and send it again. The refusal was recorded."),
    "notfound.title": ("未找到", "Not found"),
    "approvals.title": ("待审批退款", "Refunds waiting for approval"),
    "approvals.rule": ("两级审批规则：居民客户退款 ≥ {resident}、非居民客户退款 ≥ {nonresident} 时，需要财务中心和部门主管两级审批，"
                       "由两位不同的人作出，且都不能是申请人。任一级驳回即终止。",
                       "The two-level rule: a refund of a resident's balance of {resident} or more, or a non-resident's of "
                       "{nonresident} or more, needs the accounting centre's and the department director's approval, by two "
                       "different people, neither of them the one who asked. A rejection at either level ends it."),
    "approvals.corrections": ("账单冲红改单在本系统中无需审批（申请即生效，有审计记录），故不在此列出。",
                              "Bill corrections need no approval in gridpay (made at once, audited), so none is listed here."),
    "approvals.none": ("没有等待审批的退款。", "No refund waits for approval."),
    "approvals.your_level": ("您的审批级别", "Your level"),
    "approvals.refund": ("退款", "Refund"),
    "approvals.customer": ("客户", "Customer"),
    "approvals.amount": ("金额", "Amount"),
    "approvals.reason": ("原因", "Reason"),
    "approvals.requested_by": ("申请人", "Asked by"),
    "approvals.requested_at": ("申请时间", "Asked at"),
    "approvals.given": ("已有审批", "Approvals given"),
    "approvals.action": ("操作", "Action"),
    "approvals.comment": ("意见（驳回时必填）", "Comment (a rejection needs one)"),
    "approvals.approve": ("批准", "Approve"),
    "approvals.reject": ("驳回", "Reject"),
    "approvals.cannot": ("您不能审批此笔", "You cannot decide this one"),
    "approvals.done": ("退款 {refund} 已{decision}（{level}级）。状态：{status}。",
                       "Refund {refund}: {decision} ({level} level). Status: {status}."),
    "approvals.refused": ("未能审批：{why}", "Not decided: {why}"),
    "approvals.reject_needs_comment": ("驳回时需填写意见。", "A rejection needs a comment."),
    "why.own_request": ("申请人本人不能审批自己的退款。", "The operator who asked for a refund cannot approve it."),
    "why.already_approved": ("此级别已审批。", "This level was approved already."),
    "why.second_approval_same_person": ("两级审批必须由两位不同的人作出。", "The two approvals must come from two different people."),
    "why.forbidden": ("您的角色不能审批退款。", "Your roles cannot approve refunds."),
    "level.accounting": ("财务中心", "accounting centre"),
    "level.director": ("部门主管", "department director"),
    "level.single": ("单人", "single"),
    "decision.approve": ("批准", "approved"),
    "decision.reject": ("驳回", "rejected"),
    "status.pending": ("待审批", "pending"),
    "status.paid": ("已退款", "paid"),
    "status.rejected": ("已驳回", "rejected"),
    "customers.title": ("客户查询", "Customers"),
    "customers.number": ("客户编号", "Customer number"),
    "customers.find": ("查询", "Look up"),
    "customers.name": ("户名（包含）", "Name (contains)"),
    "customers.mobile": ("手机（完整号码）", "Mobile (the whole number)"),
    "customers.bad_search": ("户名不能含控制字符；手机须为 11 位数字。", "A name has no control characters; a mobile is 11 digits."),
    "customers.found": ("找到 {count} 位客户（第一页）", "{count} customers found (the first page)"),
    "customers.not_found": ("没有客户 {customer}。", "No customer {customer}."),
    "customer.title": ("客户 {customer}", "Customer {customer}"),
    "customer.name": ("户名", "Name"),
    "customer.type": ("类型", "Type"),
    "customer.type.R": ("居民", "resident"),
    "customer.type.N": ("非居民", "non-resident"),
    "customer.status": ("状态", "Status"),
    "customer.mobile": ("手机", "Mobile"),
    "customer.district": ("供电所", "District"),
    "customer.collection": ("缴费方式", "Collection"),
    "customer.prepay": ("允许预存", "Prepayment allowed"),
    "customer.balance": ("预存余额", "Prepaid balance"),
    "customer.updated": ("更新时间", "Updated"),
    "yes": ("是", "yes"),
    "no": ("否", "no"),
    "bills.title": ("账单（含冲红历史）", "Bills (with their red reversals)"),
    "bills.id": ("账单号", "Bill"),
    "bills.period": ("账期", "Period"),
    "bills.kind": ("类别", "Kind"),
    "bills.kind.O": ("原始", "original"),
    "bills.kind.R": ("冲红", "red reversal"),
    "bills.kind.N": ("改单", "replacement"),
    "bills.principal": ("电费", "Principal"),
    "bills.penalty": ("违约金", "Penalty"),
    "bills.paid": ("已收", "Paid"),
    "bills.due": ("到期日", "Due"),
    "bills.history": ("冲红历史", "Reversal history"),
    "bills.reversed_by": ("已被 {bill} 冲红（{at}）", "reversed by {bill} ({at})"),
    "bills.replaced_by": ("由 {bill} 替代", "replaced by {bill}"),
    "bills.reverses": ("冲红 {bill}", "reverses {bill}"),
    "bills.replaces": ("替代 {bill}", "replaces {bill}"),
    "payments.title": ("缴费记录", "Payments"),
    "payments.id": ("编号", "Payment"),
    "payments.channel": ("渠道", "Channel"),
    "payments.bank": ("银行", "Bank"),
    "payments.amount": ("金额", "Amount"),
    "payments.date": ("营业日", "Business date"),
    "payments.receipt": ("收据号", "Receipt"),
    "payments.reversal": ("冲正", "Reversal"),
    "payments.reversed": ("已冲正 {amount}：{reason}", "reversed {amount}: {reason}"),
    "movements.title": ("预存变动", "Prepaid movements"),
    "movements.kind": ("类别", "Kind"),
    "movements.amount": ("金额", "Amount"),
    "movements.at": ("时间", "At"),
    "agreements.title": ("代扣协议", "Debit agreements"),
    "agreements.bank": ("银行", "Bank"),
    "agreements.account": ("账号", "Account"),
    "agreements.status": ("状态", "Status"),
    "agreements.limit": ("扣款上限", "Debit limit"),
    "debits.title": ("代扣记录", "Direct debits"),
    "debits.id": ("编号", "Debit"),
    "debits.amount": ("金额", "Amount"),
    "debits.channel": ("渠道", "Channel"),
    "debits.state": ("状态", "State"),
    "debits.code": ("应答码", "Response code"),
    "debits.at": ("时间", "At"),
    "notices.title": ("短信通知", "SMS notices"),
    "notices.kind": ("类别", "Kind"),
    "notices.text": ("内容", "Text"),
    "notices.state": ("状态", "State"),
    "none": ("无", "none"),
    "more": ("（仅显示第一页）", "(first page only)"),
    "debit.start.title": ("发起实时代扣", "Start a single real-time debit"),
    "debit.start.bank": ("银行（默认：客户的有效协议）", "Bank (default: the customer's active agreement)"),
    "debit.start.channel": ("发起渠道", "Channel"),
    "debit.start.submit": ("发起代扣", "Start the debit"),
    "debit.channel.call_centre": ("呼叫中心", "call centre"),
    "debit.channel.voice": ("语音系统", "voice system"),
    "debit.channel.online_banking": ("网上银行", "online banking"),
    "debit.channel.district_office": ("供电所", "district office"),
    "debit.channel.counter": ("柜台", "counter"),
    "debit.result.title": ("代扣 {debit}", "Debit {debit}"),
    "debit.result.outcome": ("结果", "Outcome"),
    "debit.outcome.approved": ("扣款成功", "approved"),
    "debit.outcome.declined": ("银行拒绝", "declined"),
    "debit.outcome.unknown": ("结果未知（冲正进行中）", "unknown (a reversal is under way)"),
    "debit.outcome.reversed": ("已冲正（未扣款）", "reversed (nothing taken)"),
    "debit.outcome.pending": ("等待银行应答", "waiting for the bank"),
    "debit.result.reason": ("说明", "Reason"),
    "debit.result.approval": ("授权码", "Approval code"),
    "debit.result.refresh": ("刷新结果", "Refresh the outcome"),
    "debit.result.back": ("返回客户", "Back to the customer"),
    "debit.refused": ("未能发起代扣：{why}", "The debit was not started: {why}"),
    "debit.not_found": ("没有代扣 {debit}。", "No debit {debit}."),
}


def translator(lang: str) -> Callable[..., str]:
    """``t(key, **values)``: the key's text in ``lang``, with ``{values}`` filled in."""
    index = LANGS.index(lang)

    def t(key: str, **values) -> str:
        text = MESSAGES[key][index]
        return text.format(**values) if values else text

    return t


def yuan(fen: int) -> str:
    """Integer fen as yuan with thousands separators: 123456789 -> ¥1,234,567.89 (no float on the way)."""
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(int(fen)), 100)
    return f"{sign}¥{whole:,}.{cents:02d}"


def local_time(clock: Clock) -> Callable[[datetime | None], str]:
    """A formatter of instants as the business timezone's local time (naive ones are UTC: SQLite's)."""
    def formatted(at: datetime | None) -> str:
        return "" if at is None else clock.local(as_utc(at)).strftime("%Y-%m-%d %H:%M:%S")

    return formatted
